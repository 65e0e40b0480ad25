/**
 * `/api/services`: the routing table in etcd over the admin server, with the write path of `nginx-lb services`
 * (the same validation, diff and guarded transactions, from sources/services-write.ts).
 *
 *   GET    /api/services                    the table as a services.json (ETag: its etcd revision), keys hidden
 *   PUT    /api/services[?dry_run=1]        body: a services.json; the table becomes it
 *   PUT    /api/services/DOMAIN:PORT[?dry_run=1]   body: one server object (as `services set`)
 *   DELETE /api/services/DOMAIN:PORT[?dry_run=1]
 *
 * Writes take `If-Match: "<revision>"` (the ETag of a GET): refused with 409 if the table changed since. Answers
 * are values (status and JSON); the admin server decides who may ask (see server.ts).
 */
import type { IncomingMessage } from "node:http";
import { withWarnings, type Problem } from "../model/problem.js";
import { parseServices } from "../model/services.js";
import { serverKey } from "../model/services-table.js";
import { hideKeys, restoreKey, restoreKeys } from "../model/stored-key.js";
import { diffLines, planDiff, planPush, pushTxns, type CurrentKey, type PushPlan } from "../model/table-push.js";
import { parseJsonText } from "../sources/read-json.js";
import {
  applyMessage,
  applyOps,
  changedSince,
  parseServerName,
  planSet,
  readTable,
  tableDocument,
  tableKeys,
  type TableClient,
  type TableRead,
} from "../sources/services-write.js";
import { nodeTlsInspector } from "../tls/inspect.js";

/** The largest request body taken; a larger table goes through `nginx-lb services push`. */
export const MAX_BODY_BYTES = 8 << 20;
/** How long one request waits for etcd before answering 503. */
const ETCD_TIMEOUT_MS = 15_000;
const RETRY = "read the table again (GET /api/services), redo the change and send it again";

/** An answer: status, JSON body, extra headers. */
export interface ApiAnswer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Record<string, string>;
}

const answer = (status: number, body: unknown, headers?: Record<string, string>): ApiAnswer => ({
  status,
  body,
  ...(headers ? { headers } : {}),
});
const refused = (status: number, error: string, more: Record<string, unknown> = {}) =>
  answer(status, { error, ...more });

/**
 * Reads a request body up to `limit` bytes; null when it is larger. The rest of a larger body is read and dropped
 * before the answer: a client still sending would otherwise fail writing (the connection closes after the answer)
 * and never see it. The server's request timeout bounds how long that takes.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = Number(req.headers["content-length"] ?? 0) > limit ? limit + 1 : 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else chunks.length = 0;
    });
    req.once("end", () => resolve(size > limit ? null : Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
    req.once("close", () => reject(new Error("the request was cut off before its end")));
  });
}

/** The request as the API reads it. */
export interface ApiRequest {
  readonly method: string;
  /** The path after `/api/services`: "" or "/DOMAIN:PORT". */
  readonly rest: string;
  readonly query: URLSearchParams;
  readonly ifMatch: string | undefined;
  /** The body (PUT); null when larger than MAX_BODY_BYTES. */
  readonly body: () => Promise<string | null>;
}

/** Answers one request against the table `table` holds. */
export async function servicesApi(table: TableClient, req: ApiRequest): Promise<ApiAnswer> {
  const one = req.rest === "" ? null : decodeName(req.rest.slice(1));
  if (one === "bad")
    return refused(404, `${req.rest.slice(1)}: name a server as /api/services/DOMAIN:PORT (its frontend_port)`);
  const allow = one ? "PUT, DELETE" : "GET, HEAD, PUT";
  const ok = one ? ["PUT", "DELETE"] : ["GET", "HEAD", "PUT"];
  if (!ok.includes(req.method)) return answer(405, { error: `${req.method} is not served here: ${allow}` }, { allow });
  const dryRun = ["1", "true"].includes(req.query.get("dry_run") ?? "");
  const ifMatch = expectedRevision(req.ifMatch);
  if (ifMatch === "bad") return refused(400, 'If-Match must be the ETag of GET /api/services: "<etcd revision>"');
  // Before etcd is asked: a body too large is refused whatever etcd says.
  let text: string | null = "";
  if (req.method === "PUT") {
    text = await req.body();
    if (text === null)
      return refused(
        413,
        `the body is larger than ${MAX_BODY_BYTES} bytes: push a table that large with nginx-lb services push`,
      );
  }
  const made = await table.client();
  if (!made.ok) return refused(503, `etcd cannot be contacted: ${made.why}`);
  const work = async (): Promise<ApiAnswer> => {
    const read = await readTable(made.client, table.prefix);
    if (req.method === "GET" || req.method === "HEAD") return getTable(table.prefix, read);
    if (ifMatch !== undefined) {
      const changed = await changedSince(made.client, table.prefix, read, ifMatch);
      if (changed !== null)
        return refused(
          409,
          `conflict: the table under ${table.prefix} changed after revision ${ifMatch} (${changed}): nothing was written; ${RETRY}`,
          { revision: read.revision },
        );
    }
    const w = { client: made.client, prefix: table.prefix, read, dryRun };
    if (one === null) return putTable(w, text ?? "");
    if (req.method === "DELETE") return deleteServer(w, one);
    return putServer(w, one, text ?? "");
  };
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<ApiAnswer>((resolve) => {
    timer = setTimeout(
      () =>
        resolve(
          refused(
            503,
            `etcd did not answer within ${ETCD_TIMEOUT_MS / 1000} s${req.method === "GET" ? "" : ": the write may or may not have been applied; read the table (GET /api/services) to see"}`,
          ),
        ),
      ETCD_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([work(), late]);
  } catch (e) {
    return refused(
      503,
      `${table.describe(e)}${req.method === "GET" ? "" : "; nothing was written unless the answer was lost: read the table to see"}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** `a.test:80` (URL-encoded or not) as a server name; "bad" when it is not one. */
function decodeName(s: string): { domain: string; port: number } | "bad" {
  let name: string;
  try {
    name = decodeURIComponent(s);
  } catch {
    return "bad";
  }
  return parseServerName(name) ?? "bad";
}

/** `"123"`, `W/"123"` or `123` -> 123; undefined without the header or for `*`. */
function expectedRevision(h: string | undefined): number | undefined | "bad" {
  if (h === undefined || h.trim() === "*") return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(h);
  return m ? Number(m[1]) : "bad";
}

const etag = (revision: number) => ({ etag: `"${revision}"` });

function getTable(prefix: string, read: TableRead): ApiAnswer {
  const { servers, rejected } = tableDocument(prefix, read, nodeTlsInspector);
  return answer(
    200,
    { version: "0.1", servers: hideKeys(servers) },
    {
      ...etag(read.revision),
      // Left out of the document: /api/status lists them with their reasons.
      "x-nginx-lb-rejected-keys": String(rejected.length),
    },
  );
}

interface Write {
  readonly client: Parameters<typeof applyOps>[0];
  readonly prefix: string;
  readonly read: TableRead;
  readonly dryRun: boolean;
}

const stored = (read: TableRead) => new Map(read.keys.map((k) => [k.key, k.value] as const));

const invalid = (errors: readonly Problem[], warnings: readonly Problem[] = []) =>
  refused(422, "invalid: nothing was written to etcd", { problems: errors, warnings });

/** Plans, then (unless a dry run, or nothing differs) writes guarded; the diff in every answer. */
async function write(
  w: Write,
  plan: PushPlan,
  current: readonly CurrentKey[],
  desired: ReadonlyMap<string, string>,
  warnings: readonly Problem[],
  /** The whole table is written: the keys it must keep are counted (null for one server's write). */
  wholeTable = false,
): Promise<ApiAnswer> {
  const d = planDiff(w.prefix, plan, current, desired);
  const diff = { ...d, lines: diffLines(d) };
  if (w.dryRun || plan.ops.length === 0)
    return answer(
      200,
      {
        dryRun: w.dryRun,
        written: false,
        revision: w.read.revision,
        message: w.dryRun ? "dry run: nothing written" : "the table already is this: nothing written",
        diff,
        warnings,
      },
      etag(w.read.revision),
    );
  const r = await applyOps(w.client, w.prefix, pushTxns(plan, wholeTable ? w.read.keys.length : null), w.read.revision);
  const message = applyMessage(w.prefix, r, RETRY);
  if (!r.ok) return refused(409, message, { written: r.done > 0, diff });
  return answer(200, { dryRun: false, written: true, revision: r.revision, message, diff, warnings }, etag(r.revision));
}

/** PUT /api/services: the whole table, validated as services.json (TLS included). */
async function putTable(w: Write, text: string): Promise<ApiAnswer> {
  const json = parseJsonText(text);
  if (!json.ok) return invalid(json.errors, json.warnings);
  const restored = restoreKeys(w.prefix, json.value, stored(w.read));
  if (restored.problems.length > 0) return invalid(restored.problems, json.warnings);
  const checked = withWarnings(parseServices(restored.doc, { inspectTls: nodeTlsInspector }), json.warnings);
  if (!checked.ok) return invalid(checked.errors, checked.warnings);
  const desired = tableKeys(w.prefix, restored.doc, checked.value);
  return write(w, planPush(w.read.keys, desired), w.read.keys, desired, checked.warnings, true);
}

/** PUT /api/services/DOMAIN:PORT: one server, validated alone and against the others (as `services set`). */
async function putServer(w: Write, name: { domain: string; port: number }, text: string): Promise<ApiAnswer> {
  const json = parseJsonText(text);
  if (!json.ok) return invalid(json.errors, json.warnings);
  const r = restoreKey(w.prefix, json.value, stored(w.read), "");
  if (r.problem) return invalid([r.problem]);
  const set = planSet(w.prefix, w.read, r.server, nodeTlsInspector);
  if (!set.ok) return invalid(set.problems, json.warnings);
  const named = serverKey(w.prefix, name.domain, name.port);
  if (set.key !== named)
    return invalid([
      {
        code: "key_mismatch",
        path: "domain_name",
        message: `the URL names ${name.domain}:${name.port} but the body's domain_name and frontend_port make ${set.key}`,
      },
    ]);
  return write(w, set.plan, set.current, set.desired, json.warnings);
}

/** DELETE /api/services/DOMAIN:PORT: guarded like every write; 404 when there is no such server. */
async function deleteServer(w: Write, name: { domain: string; port: number }): Promise<ApiAnswer> {
  const key = serverKey(w.prefix, name.domain, name.port);
  const existing = w.read.keys.find((k) => k.key === key);
  if (!existing) return refused(404, `no server ${name.domain}:${name.port} under ${w.prefix}`);
  return write(w, planPush([existing], new Map()), [existing], new Map(), []);
}
