/**
 * Retained sizes from a V8 heap snapshot (`node --heapsnapshot-signal`): the dominator tree (Cooper, Harvey and
 * Kennedy's iterative algorithm over the strong edges), printed top-down for every node retaining at least MIN MiB,
 * named by its type, constructor or string head and the edge it is reached by. A measuring tool for docs/at-scale.md.
 *
 *   node --max-old-space-size=4096 --import tsx bench/heap-breakdown.ts FILE.heapsnapshot [MIN_MIB] [DEPTH]
 */
import { readFileSync } from "node:fs";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

const file = process.argv[2] ?? "";
const MIN = Number(process.argv[3] ?? 1) * 1048576;
const DEPTH = Number(process.argv[4] ?? 14);
const snap = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
const meta = snap.snapshot.meta;
const NF = meta.node_fields.length;
const EF = meta.edge_fields.length;
const nType = meta.node_fields.indexOf("type");
const nName = meta.node_fields.indexOf("name");
const nSize = meta.node_fields.indexOf("self_size");
const nEdges = meta.node_fields.indexOf("edge_count");
const eType = meta.edge_fields.indexOf("type");
const eName = meta.edge_fields.indexOf("name_or_index");
const eTo = meta.edge_fields.indexOf("to_node");
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const WEAK = edgeTypes.indexOf("weak");
const SHORTCUT = edgeTypes.indexOf("shortcut");
const N = snap.nodes.length / NF;
const firstEdge = new Uint32Array(N + 1);
for (let i = 0, e = 0; i < N; i++) {
  firstEdge[i] = e;
  e += (snap.nodes[i * NF + nEdges] ?? 0) * EF;
  firstEdge[i + 1] = e;
}
const strong = (e: number) => {
  const t = snap.edges[e + eType];
  return t !== WEAK && t !== SHORTCUT;
};
// Post-order DFS from the root (node 0).
const order = new Int32Array(N).fill(-1);
const post: number[] = [];
const stack: number[] = [0];
const cursor = new Uint32Array(N);
const seen = new Uint8Array(N);
seen[0] = 1;
for (let i = 0; i < N; i++) cursor[i] = firstEdge[i] ?? 0;
while (stack.length > 0) {
  const v = stack[stack.length - 1] ?? 0;
  const end = firstEdge[v + 1] ?? 0;
  let pushed = false;
  while ((cursor[v] ?? 0) < end) {
    const e = cursor[v] ?? 0;
    cursor[v] = e + EF;
    if (!strong(e)) continue;
    const w = (snap.edges[e + eTo] ?? 0) / NF;
    if (seen[w]) continue;
    seen[w] = 1;
    stack.push(w);
    pushed = true;
    break;
  }
  if (!pushed) {
    stack.pop();
    order[v] = post.length;
    post.push(v);
  }
}
// Predecessors over strong edges among reachable nodes.
const predCount = new Uint32Array(N + 1);
for (let v = 0; v < N; v++)
  if (seen[v])
    for (let e = firstEdge[v] ?? 0; e < (firstEdge[v + 1] ?? 0); e += EF)
      if (strong(e)) {
        const w = (snap.edges[e + eTo] ?? 0) / NF + 1;
        predCount[w] = (predCount[w] ?? 0) + 1;
      }
for (let i = 0; i < N; i++) predCount[i + 1] = (predCount[i + 1] ?? 0) + (predCount[i] ?? 0);
const preds = new Uint32Array(predCount[N] ?? 0);
const fill = predCount.slice();
for (let v = 0; v < N; v++)
  if (seen[v])
    for (let e = firstEdge[v] ?? 0; e < (firstEdge[v + 1] ?? 0); e += EF)
      if (strong(e)) {
        const w = (snap.edges[e + eTo] ?? 0) / NF;
        preds[fill[w]!++] = v;
      }
const idom = new Int32Array(N).fill(-1);
idom[0] = 0;
const intersect = (a: number, b: number) => {
  while (a !== b) {
    while ((order[a] ?? 0) < (order[b] ?? 0)) a = idom[a] ?? 0;
    while ((order[b] ?? 0) < (order[a] ?? 0)) b = idom[b] ?? 0;
  }
  return a;
};
for (let changed = true; changed;) {
  changed = false;
  for (let k = post.length - 2; k >= 0; k--) {
    const v = post[k] ?? 0;
    let d = -1;
    for (let p = predCount[v] ?? 0; p < (predCount[v + 1] ?? 0); p++) {
      const u = preds[p] ?? 0;
      if ((idom[u] ?? -1) === -1) continue;
      d = d === -1 ? u : intersect(u, d);
    }
    if (d !== -1 && idom[v] !== d) {
      idom[v] = d;
      changed = true;
    }
  }
}
const retained = new Float64Array(N);
for (const v of post) retained[v] = (retained[v] ?? 0) + (snap.nodes[v * NF + nSize] ?? 0);
for (const v of post) {
  const d = idom[v] ?? 0;
  if (v !== 0) retained[d] = (retained[d] ?? 0) + (retained[v] ?? 0);
}
const children = new Map<number, number[]>();
for (const v of post)
  if (v !== 0) (children.get(idom[v] ?? 0) ?? children.set(idom[v] ?? 0, []).get(idom[v] ?? 0)!).push(v);
const edgeName = new Map<number, string>();
for (let v = 0; v < N; v++)
  for (let e = firstEdge[v] ?? 0; e < (firstEdge[v + 1] ?? 0); e += EF) {
    const w = (snap.edges[e + eTo] ?? 0) / NF;
    if (idom[w] === v && !edgeName.has(w)) {
      const t = edgeTypes[snap.edges[e + eType] ?? 0];
      const n = snap.edges[e + eName] ?? 0;
      edgeName.set(w, t === "element" || t === "hidden" ? `[${n}]` : (snap.strings[n] ?? "?"));
    }
  }
const label = (v: number) => {
  const t = nodeTypes[snap.nodes[v * NF + nType] ?? 0];
  const name = (snap.strings[snap.nodes[v * NF + nName] ?? 0] ?? "").slice(0, 60).replace(/\n/g, "\\n");
  return `${t} ${name}`;
};
const mib = (b: number) => (b / 1048576).toFixed(1).padStart(6);
let total = 0;
for (let v = 0; v < N; v++) total += snap.nodes[v * NF + nSize] ?? 0;
process.stdout.write(`${N} nodes, ${mib(total)} MiB self in all, ${mib(retained[0] ?? 0)} MiB reachable\n`);
// Per type/constructor, self sizes of everything reachable.
const byCtor = new Map<string, [number, number]>();
for (const v of post) {
  const t = nodeTypes[snap.nodes[v * NF + nType] ?? 0] ?? "";
  const k = t === "object" || t === "closure" ? `${t} ${snap.strings[snap.nodes[v * NF + nName] ?? 0]}` : t;
  const c = byCtor.get(k) ?? [0, 0];
  c[0] += snap.nodes[v * NF + nSize] ?? 0;
  c[1]++;
  byCtor.set(k, c);
}
for (const [k, [s, c]] of [...byCtor].sort((a, b) => b[1][0] - a[1][0]).slice(0, 15))
  process.stdout.write(`self ${mib(s)} MiB  ${String(c).padStart(8)}  ${k.slice(0, 80)}\n`);
const walk = (v: number, depth: number) => {
  const kids = (children.get(v) ?? [])
    .filter((w) => (retained[w] ?? 0) >= MIN)
    .sort((a, b) => retained[b]! - retained[a]!);
  for (const w of kids) {
    process.stdout.write(`${mib(retained[w] ?? 0)} ${"  ".repeat(depth)}${edgeName.get(w) ?? "?"}: ${label(w)}\n`);
    if (depth < DEPTH) walk(w, depth + 1);
  }
};
walk(0, 0);
// What the tree above leaves out: objects reached from more than one place are dominated by the root itself. Grouped
// by the name of the property they are held by (their dominator's edge) and their type.
const groups = new Map<string, [number, number]>();
for (const [w, name] of edgeName) {
  if ((retained[w] ?? 0) >= MIN) continue;
  const t = nodeTypes[snap.nodes[w * NF + nType] ?? 0] ?? "";
  const k = `${/^\[\d+\]$/.test(name) ? "[i]" : name} ${t === "object" ? label(w).slice(0, 40) : t}`;
  const g = groups.get(k) ?? [0, 0];
  g[0] += retained[w] ?? 0;
  g[1]++;
  groups.set(k, g);
}
process.stdout.write("\nby holding property and type (objects under 1 MiB each):\n");
for (const [k, [s, c]] of [...groups].sort((a, b) => b[1][0] - a[1][0]).slice(0, 40))
  process.stdout.write(`${mib(s)} MiB ${String(c).padStart(8)}  ${k}\n`);
