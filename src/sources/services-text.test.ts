import fc from "fast-check";
import { describe, expect, test } from "vitest";
import type { TlsInspector } from "../model/services.js";
import type { ParseOptions } from "../model/services.js";
import { parseServicesText, readServicesFile, readServicesText, type ServicesRead } from "./services-text.js";

const PEM_CERT = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const PEM_KEY = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";

/** A stand-in certificate check that counts its calls and warns about one domain (its verdict is part of the result). */
function countingInspector(): { inspect: TlsInspector; calls: () => number } {
  let n = 0;
  return {
    inspect: (_c, _k, domain) => {
      n++;
      return {
        errors: domain.startsWith("bad") ? [{ field: "ssl_certificate", message: "does not parse" }] : [],
        warnings: domain.startsWith("old") ? [{ field: "ssl_certificate", message: "expires soon" }] : [],
      };
    },
    calls: () => n,
  };
}

const server = (i: number, extra: Record<string, unknown> = {}) => ({
  domain_name: `s${i}.example.com`,
  frontend_port: 8080,
  routes: { "/": { app: `a${i}`, service: "web" } },
  ...extra,
});
const file = (servers: unknown[], pretty = true) =>
  JSON.stringify({ version: "0.1", servers }, null, pretty ? 2 : undefined);

type Reader = (text: string, previous: ServicesRead | null, options: ParseOptions) => ServicesRead;
/** The file as the controller reads it: its bytes (compared as bytes when ASCII). */
const fileReader: Reader = (text, previous, options) => readServicesFile(Buffer.from(text), previous, options);
/** Both readers, each case run through each. */
const readers: [string, Reader][] = [
  ["bytes", fileReader],
  ["text", readServicesText],
];

/** Reads `texts` in turn, each with the previous read, and checks every result equals a whole read of its text. */
function chain(texts: readonly string[], inspectTls?: TlsInspector, reader: Reader = fileReader): ServicesRead[] {
  const reads: ServicesRead[] = [];
  let previous: ServicesRead | null = null;
  for (const text of texts) {
    const read = reader(text, previous, inspectTls ? { inspectTls } : {});
    // The whole read checks certificates with an inspector of its own, so the reads' inspector counts theirs only.
    expect(read.result).toEqual(parseServicesText(text, inspectTls ? { inspectTls: countingInspector().inspect } : {}));
    reads.push(read);
    previous = read;
  }
  return reads;
}

const three = file([server(0), server(1), server(2)]);

describe("readServicesText: equal to a whole read, whatever the previous read", () => {
  // [what, previous text, new text]
  const cases: [string, string, string][] = [
    ["one server changed", three, file([server(0), server(1, { frontend_port: 81 }), server(2)])],
    ["a server added at the end", three, file([server(0), server(1), server(2), server(3)])],
    ["a server added at the start", three, file([server(9), server(0), server(1), server(2)])],
    ["a server removed", three, file([server(0), server(2)])],
    ["all servers removed", three, file([])],
    ["servers added to an empty list", file([]), three],
    ["the version changed (outside the list)", three, three.replace('"0.1"', '"0.2"')],
    ["a syntax error in a server", three, three.replace('"s1.example.com"', '"s1.example.com",')],
    ["a syntax error after the list", three, three.slice(0, -1)],
    ["an unknown field in a server", three, file([server(0), server(1, { extra: 1 }), server(2)])],
    [
      "a repeated key in a server",
      three,
      three.replace('"frontend_port": 8080', '"frontend_port": 1, "frontend_port": 2'),
    ],
    ["a server claimed twice", three, file([server(0), server(0), server(2)])],
    [
      "a port of both protocols",
      three,
      file([
        server(0),
        server(1, { ssl_certificate: PEM_CERT, ssl_certificate_key: PEM_KEY, ssl_port: 8080 }),
        server(2),
      ]),
    ],
    [
      "a __proto__ route key",
      three,
      three.replace('"routes": {', '"routes": {"__proto__": {"app": "x", "service": "y"},'),
    ],
    ["a server that is not an object", three, file([server(0), 7, server(2)])],
    ["a repeated servers key", three, three.replace('"version": "0.1",', '"version": "0.1", "servers": [],')],
    ["a byte-order mark", three, `\ufeff${three}`],
    ["the same text again", three, three],
    ["back to valid after an error", three.slice(0, -1), three],
    [
      "whitespace between servers",
      file([server(0), server(1)], false),
      file([server(0), server(1)], false).replace("},{", "} , {"),
    ],
    [
      "a string holding brackets",
      three,
      file([server(0), server(1, { routes: { "/a": { app: "x", service: "y]}{[" } } }), server(2)]),
    ],
    ["empty text", three, ""],
    ["a name of two-byte characters (not ASCII)", three, three.replace('"a1"', '"a\u00e9\u4e2d"')],
    ["a change next to the list's end", three, three.replace('"a2"', '"a22"')],
    ["a change next to the list's start", three, three.replace('"s0.example.com"', '"s00.example.com"')],
  ];
  const both = readers.flatMap(([name, reader]) => cases.map((c) => [name, ...c, reader] as const));
  test.each(both)("%s: %s", (_reader, _what, before, after, reader) => {
    chain([before, after, before], undefined, reader);
  });

  test("a change to one of many servers checks that server only and keeps the others' model values", () => {
    const tls = { ssl_certificate: PEM_CERT, ssl_certificate_key: PEM_KEY, ssl_port: 8443 };
    const servers = Array.from({ length: 50 }, (_, i) => server(i, tls));
    const { inspect, calls } = countingInspector();
    const changed = [...servers];
    changed[25] = server(25, { ...tls, frontend_port: 81 });
    const [first, second] = chain([file(servers), file(changed)], inspect);
    expect(calls()).toBe(51);
    const a = first?.result.ok ? first.result.value.servers : [];
    const b = second?.result.ok ? second.result.value.servers : [];
    expect(b.filter((s, i) => s === a[i]).length).toBe(49);
  });

  test.each(readers)(
    "%s: a site added at the end, at the start or between, and one removed, each checks that server and at most the next",
    (_name, reader) => {
      const tls = { ssl_certificate: PEM_CERT, ssl_certificate_key: PEM_KEY, ssl_port: 8443 };
      const servers = Array.from({ length: 50 }, (_, i) => server(i, tls));
      const { inspect, calls } = countingInspector();
      chain(
        [
          file([...servers, server(1000, tls)]),
          file([...servers, server(1001, tls)]),
          file([server(1002, tls), ...servers, server(1001, tls)]),
          file([
            server(1002, tls),
            ...servers.slice(0, 20),
            server(1003, tls),
            ...servers.slice(20),
            server(1001, tls),
          ]),
          file([server(1002, tls), ...servers.slice(0, 20), ...servers.slice(20), server(1001, tls)]),
        ],
        inspect,
        reader,
      );
      // A server inserted before another shares its text's tail ("...example.com", the certificates): the shared tail
      // then ends inside the next server, which is read again; the same for the server after a removed one.
      expect(calls()).toBe(51 + 1 + 2 + 2 + 1);
    },
  );

  test("a read keeps what the next compares with: an ASCII file its bytes, other files and texts their text", () => {
    const ascii = Buffer.from(three);
    const wide = Buffer.from(three.replace('"a1"', '"a\u00e9"'));
    for (const previous of [null, readServicesText(three, null)]) {
      expect(readServicesFile(ascii, previous)).toMatchObject({ text: null, bytes: ascii });
      expect(readServicesFile(wide, previous)).toMatchObject({ text: wide.toString("utf8"), bytes: null });
      expect(readServicesText(three, previous)).toMatchObject({ text: three, bytes: null });
    }
    // The same bytes again keep the new buffer, not the previous read's.
    const again = readServicesFile(ascii, readServicesFile(Buffer.from(three), null));
    expect(again.text).toBeNull();
    expect(again.bytes).toBe(ascii);
  });

  test("certificate verdicts of kept servers stay in the result, with their current index", () => {
    const tls = { ssl_certificate: PEM_CERT, ssl_certificate_key: PEM_KEY, ssl_port: 8443 };
    const { inspect } = countingInspector();
    const old = { ...server(5, tls), domain_name: "old.example.com" };
    chain([file([server(1, tls), old]), file([server(0, tls), server(1, tls), old])], inspect);
    chain([file([old, server(1, tls)]), file([old, { ...server(2, tls), domain_name: "bad.example.com" }])], inspect);
  });
});

/** Text edits a config centre or an editor might make, valid or not. */
const edit = fc.oneof(
  fc.record({
    kind: fc.constant("splice" as const),
    at: fc.nat(),
    cut: fc.nat({ max: 40 }),
    put: fc.string({ maxLength: 12 }),
  }),
  fc.record({
    kind: fc.constant("json" as const),
    at: fc.nat(),
    cut: fc.nat({ max: 40 }),
    put: fc.constantFrom(
      "{",
      "}",
      "[",
      "]",
      ",",
      '"',
      ":",
      '"__proto__"',
      '"frontend_port": 1,',
      '"x": 1,',
      "\\",
      "\n",
    ),
  }),
  fc.record({
    kind: fc.constant("server" as const),
    at: fc.nat(),
    server: fc.nat({ max: 30 }),
    port: fc.constantFrom(80, 8080, 443, 0),
  }),
  fc.record({ kind: fc.constant("drop" as const), at: fc.nat() }),
);
type Edit = typeof edit extends fc.Arbitrary<infer T> ? T : never;

function apply(servers: unknown[], text: string, e: Edit): { servers: unknown[]; text: string } {
  if (e.kind === "server") {
    const next = [...servers];
    next.splice(e.at % (servers.length + 1), 0, server(e.server, { frontend_port: e.port }));
    return { servers: next, text: file(next) };
  }
  if (e.kind === "drop") {
    const next = servers.filter((_, i) => i !== e.at % Math.max(servers.length, 1));
    return { servers: next, text: file(next) };
  }
  const at = e.at % (text.length + 1);
  return { servers, text: text.slice(0, at) + e.put + text.slice(at + e.cut) };
}

test("property: reading a sequence of edited texts incrementally equals reading each whole", () => {
  fc.assert(
    fc.property(fc.array(fc.nat({ max: 30 }), { maxLength: 8 }), fc.array(edit, { maxLength: 6 }), (ids, edits) => {
      let servers: unknown[] = ids.map((i) => server(i));
      let text = file(servers);
      const texts = [text];
      for (const e of edits) {
        ({ servers, text } = apply(servers, text, e));
        texts.push(text);
      }
      for (const [, reader] of readers) chain(texts, countingInspector().inspect, reader);
    }),
    { numRuns: 300 },
  );
});

/** A server of a small set of domains, plain or TLS, on a few ports: edits of these often claim a taken (port, domain). */
const claimant = fc.record({
  id: fc.nat({ max: 6 }),
  port: fc.constantFrom(80, 8080, 8443),
  ssl: fc.option(fc.constantFrom(443, 8443, 8080), { nil: undefined }),
});
type Claimant = typeof claimant extends fc.Arbitrary<infer T> ? T : never;
const claimantServer = (c: Claimant) =>
  server(c.id, {
    frontend_port: c.port,
    ...(c.ssl === undefined ? {} : { ssl_certificate: PEM_CERT, ssl_certificate_key: PEM_KEY, ssl_port: c.ssl }),
  });

describe("readServicesText: a clean file's claims checked against the changed servers only (server-claims.ts)", () => {
  test("property: servers added and removed one edit at a time, clean or claiming a taken port or domain, equal a whole read", () => {
    const step = fc.oneof(
      fc.record({ add: claimant, at: fc.nat() }),
      fc.record({ drop: fc.nat() }),
      fc.record({ replace: claimant, at: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(claimant, { maxLength: 6 }), fc.array(step, { maxLength: 30 }), (start, steps) => {
        let servers: unknown[] = start.map(claimantServer);
        const texts = [file(servers)];
        for (const s of steps) {
          const next = [...servers];
          if ("add" in s) next.splice(s.at % (next.length + 1), 0, claimantServer(s.add));
          else if ("drop" in s) next.splice(s.drop % Math.max(next.length, 1), 1);
          else next.splice(s.at % Math.max(next.length, 1), 1, claimantServer(s.replace));
          servers = next;
          texts.push(file(servers));
        }
        for (const [, reader] of readers) chain(texts, countingInspector().inspect, reader);
      }),
      { numRuns: 400 },
    );
  });

  test("a clean file's edits keep its claims (no full assemble), past the edits an index holds, and equal a whole read", () => {
    const servers = Array.from({ length: 40 }, (_, i) => server(i));
    const texts = [file(servers)];
    // 300 changes of the last server (the figure's change: a new site, the previous one gone), one at a time.
    for (let k = 0; k < 300; k++) texts.push(file([...servers, server(1000 + k)]));
    const reads = chain(texts);
    expect(reads.every((r) => r.layout?.claims)).toBe(true);
  });

  test("a change that claims a taken (port, domain) is worded by the whole check, and the next clean file is clean again", () => {
    const servers = [server(0), server(1), server(2)];
    const reads = chain([file(servers), file([...servers, server(1)]), file([...servers, server(3)])]);
    expect(reads[1]?.result.ok).toBe(false);
    expect(reads[1]?.layout?.claims).toBeNull();
    expect(reads[2]?.result.ok).toBe(true);
  });
});
