import { Etcd3 } from "etcd3";
import { describeEtcdError, etcd3ClientOptions } from "../sources/etcd-v3.js";
import { registrationFor, setupEtcd, v2Client, type RegisterFlags } from "./register.js";

/** `nginx-lb deregister`: deletes one endpoint key; exit 0 whether or not it was there (it is gone either way). */
export async function deregisterCommand(flags: Omit<RegisterFlags, "weight" | "ttl">): Promise<number> {
  const setup = await setupEtcd(flags);
  if (typeof setup === "number") return setup;
  const reg = registrationFor(setup.config.prefix, flags);
  if (!reg.ok) {
    for (const e of reg.errors) console.error(`error: ${e.path}: ${e.message}`);
    return 1;
  }
  const { key } = reg.value;
  try {
    let deleted: boolean;
    if (setup.config.api === "v2") {
      const r = await v2Client(setup.connection).call("DELETE", key);
      if (!r.ok && r.status !== 404) throw new Error(`etcd answered ${r.status}: ${r.text.slice(0, 200)}`);
      deleted = r.ok;
    } else {
      const client = new Etcd3(etcd3ClientOptions(setup.connection));
      try {
        deleted = Number((await client.delete().key(key).exec()).deleted) > 0;
      } finally {
        client.close();
      }
    }
    console.error(deleted ? `deleted ${key}` : `${key} was not registered`);
    return 0;
  } catch (e) {
    console.error(`error: ${key}: ${describeEtcdError(e, setup.connection)}`);
    return 1;
  }
}
