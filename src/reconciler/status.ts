import type { Ejections } from "../health/ejections.js";
import type { Problem } from "../model/problem.js";
import type { Change } from "./diff.js";
import type { Topology } from "./topology.js";

/** One apply as the status API and metrics report it. */
export interface ApplyRecord {
  readonly at: string;
  readonly result: "applied" | "unchanged" | "failed";
  readonly action: "none" | "reload" | "start" | "push";
  readonly reason: string;
  readonly generation: string;
  readonly ms: { readonly render: number; readonly test: number; readonly reload: number; readonly total: number };
  readonly change?: Change;
  readonly error?: string;
}

/** Everything the admin server and `nginx-lb status` read. Contains no key material. */
export interface StatusSnapshot {
  readonly startedAt: string;
  readonly services: {
    readonly file: string;
    readonly valid: boolean;
    readonly errors: readonly Problem[];
    readonly warnings: readonly Problem[];
    readonly loadedAt?: string;
    /**
     * A valid routing change nginx refused (e.g. a port another process holds): the routes in force keep serving,
     * endpoint changes keep applying on them, and the change is retried at `nextRetryAt`. Absent when none.
     */
    readonly pending?: { readonly since: string; readonly error: string; readonly nextRetryAt: string };
  };
  readonly registry: {
    readonly kind: string;
    readonly connected: boolean;
    readonly origin: string;
    readonly warnings: readonly Problem[];
    /** False while the registry's content is rejected as a whole (an invalid backends file): the last valid stays. */
    readonly valid: boolean;
    /** Why it was rejected; empty while valid. */
    readonly errors: readonly Problem[];
  };
  readonly nginx: {
    readonly running: boolean;
    readonly pid: number | null;
    readonly generation: string | null;
    /** How endpoint changes reach nginx: `dynamic` (pushed, no reload) or `reload`. */
    readonly endpointsMode?: "dynamic" | "reload";
    /** Dynamic mode: the version of the endpoint sets nginx holds. */
    readonly pushedVersion?: number | null;
    readonly lastError?: string;
  };
  readonly applies: readonly ApplyRecord[];
  readonly counters: {
    readonly applied: number;
    readonly failed: number;
    readonly unchanged: number;
    readonly reloads: number;
    readonly pushes: number;
  };
  readonly lastSuccessAt?: string;
  /** Whether the last save of state.json worked; since when it works or fails (absent before the first save). */
  readonly persist?: { readonly ok: boolean; readonly since: string; readonly error?: string };
  /** Set while an adopted nginx waits for a source of truth before the first apply (state.json unreadable). */
  readonly waiting?: string;
  /** What nginx serves now (the last applied or confirmed-unchanged state); absent before the first apply. */
  readonly topology?: Topology;
  /** Where the routes come from; absent from an older controller. */
  readonly routes?: RoutesSource;
  /** Dynamic mode: the endpoints nginx's balancer ejected for failing requests, by upstream and address. */
  readonly ejections?: Ejections;
}

/** Where the routing table in force comes from: the services file, or etcd (prefix, revision, rejected keys). */
export type RoutesSource =
  | { readonly kind: "file"; readonly file: string }
  | {
      readonly kind: "etcd";
      readonly prefix: string;
      /** The etcd revision the table reflects; 0 before etcd first answered (and no table was saved). */
      readonly revision: number;
      readonly connected: boolean;
      readonly origin: string;
      readonly keys: number;
      /** Keys refused on their own (validation) or against an older key (conflict); never key material. */
      readonly rejected: readonly {
        readonly key: string;
        readonly problems: readonly Problem[];
        /** True when the key's last valid version still serves. */
        readonly keptLastValid: boolean;
      }[];
    };

type Listener = (s: StatusSnapshot) => void;

/** Holds the status snapshot; writers replace parts, readers get an immutable copy and change notifications. */
export class StatusStore {
  private state: StatusSnapshot;
  private listeners = new Set<Listener>();

  constructor(servicesFile: string, registryKind: string, now: Date) {
    this.state = {
      startedAt: now.toISOString(),
      services: { file: servicesFile, valid: false, errors: [], warnings: [] },
      registry: { kind: registryKind, connected: false, origin: "not yet read", warnings: [], valid: true, errors: [] },
      nginx: { running: false, pid: null, generation: null },
      applies: [],
      counters: { applied: 0, failed: 0, unchanged: 0, reloads: 0, pushes: 0 },
    };
  }

  /** The current snapshot. */
  get(): StatusSnapshot {
    return this.state;
  }

  /** Replaces parts of the snapshot and notifies listeners. */
  update(patch: (s: StatusSnapshot) => Partial<StatusSnapshot>): void {
    this.state = { ...this.state, ...patch(this.state) };
    for (const l of this.listeners) l(this.state);
  }

  /** Records an apply outcome, keeping the latest 50. */
  recordApply(rec: ApplyRecord): void {
    this.update((s) => ({
      applies: [rec, ...s.applies].slice(0, 50),
      counters: {
        applied: s.counters.applied + (rec.result === "applied" ? 1 : 0),
        failed: s.counters.failed + (rec.result === "failed" ? 1 : 0),
        unchanged: s.counters.unchanged + (rec.result === "unchanged" ? 1 : 0),
        reloads: s.counters.reloads + (rec.result === "applied" && rec.action === "reload" ? 1 : 0),
        pushes: s.counters.pushes + (rec.result === "applied" && rec.action === "push" ? 1 : 0),
      },
      ...(rec.result === "applied" ? { lastSuccessAt: rec.at } : {}),
    }));
  }

  /** Calls the listener on every change; returns an unsubscribe function. */
  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}
