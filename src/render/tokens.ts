import { isBackendName, isDomain, isName, isUrlPath } from "../model/grammar.js";
import { ipFamily } from "../model/ip.js";

/**
 * Every value emitted into nginx.conf passes through one of these. The model was validated at the edge, so a
 * failure here is a bug in nginx-lb, and we throw rather than emit something nginx would read differently.
 */
export class RenderBug extends Error {
  override name = "RenderBug";
}

function check(ok: boolean, kind: string, value: unknown): void {
  if (!ok) throw new RenderBug(`refusing to emit ${kind} ${JSON.stringify(value)}: it fails the ${kind} grammar`);
}

/** The upstream names we generate (`nlb_` and a hash, `_<n>` for a backup): also how the admin API checks one. */
export const isUpstreamName = (v: string): boolean => /^nlb_[0-9a-f]{16}(_[0-9]+)?$/.test(v);

export const tok = {
  domain(v: string): string {
    check(isDomain(v), "domain", v);
    return v;
  },
  path(v: string): string {
    check(isUrlPath(v), "URL path", v);
    return v;
  },
  name(v: string): string {
    check(isName(v), "name", v);
    return v;
  },
  /** A backend name `<app>-<service>`: longer than one name may be. */
  backend(v: string): string {
    check(isBackendName(v), "backend name", v);
    return v;
  },
  port(v: number): string {
    check(Number.isInteger(v) && v >= 1 && v <= 65535, "port", v);
    return String(v);
  },
  int(v: number): string {
    check(Number.isInteger(v) && v >= 0, "integer", v);
    return String(v);
  },
  /** An address as a `server` line writes it: IPv6 in brackets. */
  hostPort(ip: string, port: number): string {
    const family = ipFamily(ip);
    check(family !== null, "IP address", ip);
    return family === 6 ? `[${ip}]:${tok.port(port)}` : `${ip}:${tok.port(port)}`;
  },
  /** A file path chosen by the operator (state dir, pid file): absolute, no characters nginx would read specially. */
  file(v: string): string {
    check(/^\/[A-Za-z0-9._/@+-]*$/.test(v), "file path", v);
    return v;
  },
  /** A system user or group name (`user` directive): the portable POSIX form useradd accepts, nothing nginx parses. */
  user(v: string): string {
    check(/^[a-z_][a-z0-9_-]{0,31}$/.test(v), "user name", v);
    return v;
  },
  /** A secret we generated (hex): the endpoint push token. */
  secret(v: string): string {
    check(/^[0-9a-f]{32,128}$/.test(v), "secret", "(hidden)");
    return v;
  },
  /** An upstream name we generated. */
  upstream(v: string): string {
    check(isUpstreamName(v), "upstream name", v);
    return v;
  },
  /** A listen address: host (IPv4, [IPv6] or *) with a port. */
  listen(host: string | undefined, port: number): string {
    if (host === undefined) return tok.port(port);
    return host === "*" ? `*:${tok.port(port)}` : tok.hostPort(host, port);
  },
};
