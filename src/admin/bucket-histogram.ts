import { Histogram, type LabelValues } from "prom-client";

interface Series {
  readonly labels: Readonly<Record<string, string | number>>;
  /** Per bucket, not cumulative: one more entry than bounds (above the last bound). */
  readonly counts: number[];
  sum: number;
}

/**
 * A Prometheus histogram fed whole bucket counts (nginx counts requests per bucket; the controller adds what it
 * reads) as well as single observations. prom-client's Histogram takes one value at a time: a second's worth of
 * requests would be thousands of calls. Printed exactly as a prom-client histogram (cumulative `_bucket` with `le`,
 * `_sum`, `_count`); the base class only registers it and is otherwise unused.
 */
export class BucketHistogram<T extends string> extends Histogram<T> {
  private readonly series = new Map<string, Series>();

  constructor(
    private readonly config: {
      readonly name: string;
      readonly help: string;
      readonly labelNames: readonly T[];
      readonly buckets: readonly number[];
      readonly registers: NonNullable<ConstructorParameters<typeof Histogram<T>>[0]["registers"]>;
    },
  ) {
    super({ ...config, buckets: [...config.buckets], labelNames: [...config.labelNames] });
  }

  private key(labels: LabelValues<T>): string {
    return this.config.labelNames.map((n) => String(labels[n] ?? "")).join("\u0000");
  }

  private entry(labels: LabelValues<T>): Series {
    const key = this.key(labels);
    let s = this.series.get(key);
    if (!s) {
      const copy: Record<string, string | number> = {};
      for (const n of this.config.labelNames) copy[n] = labels[n] ?? "";
      s = { labels: copy, counts: new Array<number>(this.config.buckets.length + 1).fill(0), sum: 0 };
      this.series.set(key, s);
    }
    return s;
  }

  /** Adds per-bucket counts (index i: up to bound i; the last: above every bound) and their sum. */
  addCounts(labels: LabelValues<T>, counts: readonly number[], sum: number): void {
    const s = this.entry(labels);
    for (let i = 0; i < s.counts.length; i++) s.counts[i] = (s.counts[i] ?? 0) + (counts[i] ?? 0);
    s.sum += sum;
  }

  /** Adds one observation. */
  observeValue(labels: LabelValues<T>, value: number): void {
    const s = this.entry(labels);
    const i = this.config.buckets.findIndex((b) => value <= b);
    const at = i < 0 ? this.config.buckets.length : i;
    s.counts[at] = (s.counts[at] ?? 0) + 1;
    s.sum += value;
  }

  /** A copy of one label set's per-bucket counts (as addCounts takes them); undefined before its first count. */
  countsOf(labels: LabelValues<T>): number[] | undefined {
    const s = this.series.get(this.key(labels));
    return s ? [...s.counts] : undefined;
  }

  /** Drops a label set (its route or endpoint went away). */
  drop(labels: LabelValues<T>): void {
    this.series.delete(this.key(labels));
  }

  // The registry prints what this returns (prom-client calls it in preference to get()).
  async getForPromString(): Promise<Awaited<ReturnType<Histogram<T>["get"]>>> {
    const { name, help, buckets } = this.config;
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      buckets.forEach((le, i) => {
        acc += s.counts[i] ?? 0;
        values.push({ labels: { le, ...s.labels }, value: acc, metricName: `${name}_bucket` });
      });
      acc += s.counts[buckets.length] ?? 0;
      values.push({ labels: { le: "+Inf", ...s.labels }, value: acc, metricName: `${name}_bucket` });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${name}_sum` });
      values.push({ labels: { ...s.labels }, value: acc, metricName: `${name}_count` });
    }
    const data: unknown = { name, help, type: "histogram", values, aggregator: "sum" };
    return Promise.resolve(data as Awaited<ReturnType<Histogram<T>["get"]>>);
  }

  override get(): ReturnType<Histogram<T>["get"]> {
    return this.getForPromString();
  }
}
