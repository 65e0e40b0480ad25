import { request } from "node:http";
import { EJECTIONS_PATH } from "../render/dynamic.js";
import type { PushTarget } from "./endpoints-push.js";

/**
 * Reads nginx's outlier ejection records from the control server (dynamic mode): the body text on a 200, or why
 * not. The token goes in a header, as for a push: loopback is shared with every local user.
 */
export function readEjections(target: PushTarget): Promise<{ ok: true; text: string } | { ok: false; why: string }> {
  const timeoutMs = target.timeoutMs ?? 2000;
  return new Promise((resolve) => {
    const req = request(
      {
        host: target.host ?? "127.0.0.1",
        port: target.port,
        path: EJECTIONS_PATH,
        method: "GET",
        agent: false,
        headers: target.token ? { "x-nginx-lb-token": target.token } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => resolve({ ok: false, why: `GET ${EJECTIONS_PATH}: ${e.message}` }));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode === 200) resolve({ ok: true, text });
          else
            resolve({ ok: false, why: `GET ${EJECTIONS_PATH}: ${res.statusCode ?? 0} ${text.trim().slice(0, 200)}` });
        });
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (e) => resolve({ ok: false, why: `GET ${EJECTIONS_PATH}: ${e.message}` }));
    req.end();
  });
}
