/**
 * Per-route time series for the dashboard's charts: requests/s, 5xx/s and p50/p99 upstream latency, one point per
 * bucket (default 5 s) over a window (default 15 min). Pure: the caller hands in the time and the running counters.
 *
 * Memory is bounded: a route gets a series only once it has traffic, loses it after a whole window without any, and
 * at most `maxSeries` routes hold one (first come; a route refused a series says so instead of showing zeros). One
 * series is `points × 4` float32 values: 180 points = 2,880 bytes, so 10,000 routes all busy would need about 29 MB;
 * the default cap of 2,048 series keeps it near 6 MB whatever the number of routes.
 */

/** The running counters of one route, as TrafficStats keeps them. */
export interface RouteCounts {
  readonly requests: number;
  /** Answers with a 5xx status. */
  readonly errors: number;
  /** Upstream response times: how many fell in each histogram bucket (not cumulative), the last one being +Inf. */
  readonly latency: ArrayLike<number>;
}

export interface SeriesOptions {
  /** Upper bounds (seconds) of the latency histogram's finite buckets, ascending; `latency` has one more (+Inf). */
  readonly bounds: readonly number[];
  /** Default 5,000. */
  readonly bucketMs?: number;
  /** Default 15 minutes. */
  readonly windowMs?: number;
  /** Routes that may hold a series at once. Default 2,048. */
  readonly maxSeries?: number;
}

/** One route's series as `/api/routes/<upstream>/series` serves it. Every array is oldest first, one per bucket. */
export interface RouteSeriesView {
  readonly bucketSeconds: number;
  /** End of the newest bucket (ISO time); null before the first bucket closes. */
  readonly end: string | null;
  /** null: no data for that bucket (before the controller counted, or the route had no series then). */
  readonly requestsPerSecond: readonly (number | null)[];
  readonly errorsPerSecond: readonly (number | null)[];
  /** null also for a bucket without any upstream answer. */
  readonly p50Ms: readonly (number | null)[];
  readonly p99Ms: readonly (number | null)[];
  /** Why there is no data although the route may have traffic (the series cap); null otherwise. */
  readonly note: string | null;
}

/**
 * The q-quantile of a histogram, as Prometheus's histogram_quantile computes it: find the bucket holding the rank
 * q × total, then interpolate linearly inside it (the lowest bucket starting at 0); a rank in the +Inf bucket gives the
 * highest finite bound. `counts` are per bucket (not cumulative), the last one being +Inf. NaN without observations.
 */
export function histogramQuantile(q: number, bounds: readonly number[], counts: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i] ?? 0;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const inBucket = counts[i] ?? 0;
    if (below + inBucket >= rank && inBucket > 0) {
      const start = i === 0 ? 0 : (bounds[i - 1] ?? 0);
      const end = bounds[i] ?? start;
      return start + (end - start) * ((rank - below) / inBucket);
    }
    below += inBucket;
  }
  return bounds.at(-1) ?? NaN;
}

const CHANNELS = 4; // requests/s, 5xx/s, p50 s, p99 s

interface Series {
  readonly data: Float32Array;
  /** First bucket with valid data: earlier slots are unknown, not zero. */
  readonly from: number;
  /** Newest bucket with traffic. */
  lastActive: number;
}

const round = (v: number, digits: number): number | null => {
  if (!Number.isFinite(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

export class SeriesStore {
  private readonly bucketMs: number;
  private readonly points: number;
  private readonly maxSeries: number;
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, Series>();
  /** Routes that had traffic but no series (the cap), until they get one or are removed. */
  private readonly refused = new Set<string>();
  /** Counters at the start of the open bucket. */
  private base: { idx: number; at: number; counts: ReadonlyMap<string, RouteCounts> } | null = null;
  private first: number | null = null;
  private newest: number | null = null;

  constructor(options: SeriesOptions) {
    this.bucketMs = options.bucketMs ?? 5_000;
    this.points = Math.max(1, Math.round((options.windowMs ?? 15 * 60_000) / this.bucketMs));
    this.maxSeries = options.maxSeries ?? 2_048;
    this.bounds = options.bounds;
  }

  /** Whether a call at `at` closes a bucket (and so reads the counters): callers read them only then. */
  due(at: number): boolean {
    return !this.base || Math.floor(at / this.bucketMs) > this.base.idx;
  }

  /**
   * Called often (every second); when `at` enters a new bucket, the counters' change since the last bucket boundary
   * becomes the closed bucket's point. A tick is up to a call interval late, so a point may hold up to that much of
   * its neighbour. A gap (a stalled timer) gives every skipped bucket the average over the gap. Routes missing from
   * `counts` (removed from the model) lose their series.
   */
  observe(at: number, counts: ReadonlyMap<string, RouteCounts>): void {
    const idx = Math.floor(at / this.bucketMs);
    if (!this.base) {
      this.base = { idx, at, counts };
      return;
    }
    // A clock that went back: wait until it passes the open bucket again.
    if (idx <= this.base.idx) return;
    const seconds = Math.max((at - this.base.at) / 1000, 0.001);
    const from = Math.max(this.base.idx, idx - this.points);
    this.first ??= from;
    const delta = new Float64Array(this.bounds.length + 1);
    for (const [upstream, now] of counts) {
      const before = this.base.counts.get(upstream);
      // A route new since the last boundary started at zero; counters only grow (a reset reads as no traffic).
      const requests = Math.max(0, now.requests - (before?.requests ?? 0));
      let s = this.series.get(upstream);
      if (!s && requests > 0) s = this.allocate(upstream);
      if (!s) continue;
      let p50 = NaN;
      let p99 = NaN;
      if (requests > 0) {
        for (let i = 0; i < delta.length; i++)
          delta[i] = Math.max(0, (now.latency[i] ?? 0) - (before?.latency[i] ?? 0));
        p50 = histogramQuantile(0.5, this.bounds, delta);
        p99 = histogramQuantile(0.99, this.bounds, delta);
        s.lastActive = idx - 1;
      }
      const errors = Math.max(0, now.errors - (before?.errors ?? 0));
      for (let b = from; b < idx; b++) {
        const at = (b % this.points) * CHANNELS;
        s.data[at] = requests / seconds;
        s.data[at + 1] = errors / seconds;
        s.data[at + 2] = p50;
        s.data[at + 3] = p99;
      }
    }
    for (const [upstream, s] of this.series)
      if (!counts.has(upstream) || s.lastActive <= idx - 1 - this.points) this.series.delete(upstream);
    for (const upstream of this.refused) if (!counts.has(upstream)) this.refused.delete(upstream);
    this.newest = idx - 1;
    this.base = { idx, at, counts };
  }

  private allocate(upstream: string): Series | undefined {
    if (this.series.size >= this.maxSeries) {
      this.refused.add(upstream);
      return undefined;
    }
    const data = new Float32Array(this.points * CHANNELS);
    for (let i = 0; i < this.points; i++) data.fill(NaN, i * CHANNELS + 2, i * CHANNELS + 4);
    // A route refused earlier had traffic we did not keep: its past is unknown, not zero.
    const from = this.refused.delete(upstream) ? (this.base?.idx ?? 0) : (this.first ?? 0);
    const s: Series = { data, from, lastActive: -Infinity };
    this.series.set(upstream, s);
    return s;
  }

  /** How many routes hold a series. */
  get size(): number {
    return this.series.size;
  }

  /** One route's series over the whole window (unknown buckets as null). */
  get(upstream: string): RouteSeriesView {
    const rps: (number | null)[] = [];
    const eps: (number | null)[] = [];
    const p50: (number | null)[] = [];
    const p99: (number | null)[] = [];
    const s = this.series.get(upstream);
    const refused = this.refused.has(upstream);
    if (this.newest !== null && this.first !== null)
      for (let b = this.newest - this.points + 1; b <= this.newest; b++) {
        if (b < this.first || refused || (s && b < s.from)) {
          rps.push(null);
          eps.push(null);
          p50.push(null);
          p99.push(null);
        } else if (!s) {
          // No series: no request in the window.
          rps.push(0);
          eps.push(0);
          p50.push(null);
          p99.push(null);
        } else {
          const at = (b % this.points) * CHANNELS;
          rps.push(round(s.data[at] ?? NaN, 3));
          eps.push(round(s.data[at + 1] ?? NaN, 3));
          p50.push(round((s.data[at + 2] ?? NaN) * 1000, 2));
          p99.push(round((s.data[at + 3] ?? NaN) * 1000, 2));
        }
      }
    return {
      bucketSeconds: this.bucketMs / 1000,
      end: this.newest === null ? null : new Date((this.newest + 1) * this.bucketMs).toISOString(),
      requestsPerSecond: rps,
      errorsPerSecond: eps,
      p50Ms: p50,
      p99Ms: p99,
      note: refused
        ? `no chart: more than ${this.maxSeries} routes had traffic in the last ${Math.round((this.points * this.bucketMs) / 60_000)} min; it starts once one of them is idle that long`
        : null,
    };
  }
}
