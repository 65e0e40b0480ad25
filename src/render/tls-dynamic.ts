import type { RenderOptions, RenderedFile } from "./options.js";
import { RenderBug, tok } from "./tokens.js";

/**
 * Pushed certificates (`certsMode: "pushed"`): nginx.conf names no site's certificate. The controller pushes every TLS
 * site's certificate and key to the control server (src/nginx/certs-push.ts), nginx keeps them in a shared dict, and
 * `ssl_certificate_by_lua` (src/nginx/lua/nginx_lb_certs.lua) serves the one the client's SNI names, parsed once per
 * worker. A certificate change or a new certificate is a push, not a reload.
 *
 * Two shapes use it:
 * - per-site servers (routes rendered): each TLS site's `server` listens on its TLS port with `certLines`; nginx picks
 *   the server by SNI as before, and the port's default server still refuses unknown names (`ssl_reject_handshake`),
 *   so an unknown SNI gets exactly the alert it gets with certificate files (unrecognized_name);
 * - one server per TLS port (`renderTlsPortServer`, routes pushed): nothing per site; the Lua refuses an unknown or
 *   missing SNI itself, ending the handshake with a fatal alert (internal_error: a certificate callback cannot choose
 *   the alert) before any certificate is shown.
 */

export const CERTS_MODULE = "nginx_lb_certs";
/** The certificates push location on the control server. */
export const CERTS_PATH = "/nginx-lb/certificates";
/**
 * The last pushed certificates, in the push format, in the state dir (0600): a new nginx master loads them at start,
 * so a restart after a crash serves TLS before the controller pushes again.
 */
export const INITIAL_CERTS_FILE = "certificates.push";
/**
 * A whole push carries every site's certificate and key in base64: ~10,000 sites with an RSA-2048 key and a chain of
 * two certificates (~5.5 KB of PEM each) make ~75 MB. The body must fit in memory (client_body_buffer_size) to be read
 * by Lua.
 */
export const CERTS_MAX_BODY_MB = 96;
/**
 * The dict holds each site's PEM once (~5.5 KB for the sites above, ~55 MB at 10,000) with room to spare; fixed, since
 * a resize loses the dict. Shared memory is mapped at this size but only the pages used are resident.
 */
const CERTS_DICT = "nginx_lb_certs 128m";
const PLACEHOLDER_CERT = "tls/placeholder.crt";
const PLACEHOLDER_KEY = "tls/placeholder.key";
const PEM_CERT = /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$/;
const PEM_KEY =
  /^-----BEGIN (?:EC |RSA )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END (?:EC |RSA )?PRIVATE KEY-----\n?$/;

/** True when the options ask for pushed certificates. */
export function pushesCerts(options: RenderOptions): boolean {
  return options.certsMode === "pushed";
}

/** The placeholder, checked: pushed certificates need the Lua module (dynamic mode), a token and the placeholder. */
function placeholder(options: RenderOptions): { cert: string; key: string } {
  if (options.endpointsMode !== "dynamic")
    throw new RenderBug("pushed certificates need the Lua module: render them in dynamic endpoints mode");
  if (!options.luaSource?.[CERTS_MODULE])
    throw new RenderBug(`pushed certificates need the Lua module ${CERTS_MODULE} (options.luaSource)`);
  if (!options.pushToken) throw new RenderBug("pushed certificates need a push token (options.pushToken)");
  const p = options.tlsPlaceholder;
  if (!p || !PEM_CERT.test(p.cert) || !PEM_KEY.test(p.key))
    throw new RenderBug("pushed certificates need a PEM placeholder certificate and key (options.tlsPlaceholder)");
  return p;
}

/** http-context lines: the dict the pushed certificates live in (it outlives reloads). */
export function certsHttpLines(options: RenderOptions): string[] {
  if (!pushesCerts(options)) return [];
  placeholder(options);
  return [
    `    # Pushed certificates: served by SNI from this dict (ssl_certificate_by_lua), kept across reloads.`,
    `    lua_shared_dict ${CERTS_DICT};`,
  ];
}

/** The init_by_lua statement that loads the start-up certificates into an empty dict (a new master), or null. */
export function certsInitLua(options: RenderOptions, dir: string): string | null {
  if (!pushesCerts(options)) return null;
  placeholder(options);
  return `require("${CERTS_MODULE}").load("${tok.file(`${dir}/${INITIAL_CERTS_FILE}`)}")`;
}

/** The certificates push location inside the loopback-only control server. */
export function certsControlLines(options: RenderOptions): string[] {
  if (!pushesCerts(options)) return [];
  placeholder(options);
  const mb = `${tok.int(CERTS_MAX_BODY_MB)}m`;
  // Loopback is shared with every local user: every request must carry the push token (compared in constant time).
  const token = tok.secret(options.pushToken ?? "");
  return [
    `        location = ${CERTS_PATH} {`,
    `            client_max_body_size ${mb};`,
    `            client_body_buffer_size ${mb};`,
    `            content_by_lua_block { require("${CERTS_MODULE}").receive("${token}") }`,
    `        }`,
  ];
}

/** The files pushed certificates add beside nginx.conf: the Lua module and the placeholder (0600: a private key). */
export function certsFiles(options: RenderOptions): RenderedFile[] {
  if (!pushesCerts(options)) return [];
  const p = placeholder(options);
  return [
    { path: `lua/${CERTS_MODULE}.lua`, content: options.luaSource?.[CERTS_MODULE] ?? "", mode: 0o600 },
    { path: PLACEHOLDER_CERT, content: p.cert, mode: 0o600 },
    { path: PLACEHOLDER_KEY, content: p.key, mode: 0o600 },
  ];
}

/**
 * The certificate lines of a `server` on TLS port `port`: nginx requires a certificate at start for every server
 * with TLS, so the placeholder stands there, and the Lua replaces it in every handshake with the pushed one the SNI
 * names (or refuses the handshake). The block text depends on the port only, so nginx compiles it once per port.
 */
export function certLines(port: number, options: RenderOptions): string[] {
  placeholder(options);
  const dir = tok.file(options.dir.replace(/\/+$/, ""));
  return [
    `        ssl_certificate ${tok.file(`${dir}/${PLACEHOLDER_CERT}`)};`,
    `        ssl_certificate_key ${tok.file(`${dir}/${PLACEHOLDER_KEY}`)};`,
    `        ssl_certificate_by_lua_block { require("${CERTS_MODULE}").serve(${tok.port(port)}) }`,
  ];
}

/**
 * The one `server` of a TLS port when routes are pushed: HTTP/2 via ALPN, certificates by SNI, and `body` (the
 * router's lines, indented eight spaces) for every request.
 */
export function renderTlsPortServer(port: number, options: RenderOptions, body: readonly string[]): string {
  return [
    `    server {`,
    `        listen ${tok.listen(options.listenHost, port)} ssl http2 default_server;`,
    ...certLines(port, options),
    ...body,
    `    }`,
  ].join("\n");
}
