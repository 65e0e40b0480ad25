/**
 * The etcd3 client with one more call: a Range whose response comes back as etcd's bytes, read by
 * `readRangePage` instead of the client's decoder (see etcd-range-page.ts for why).
 *
 * Why below the client's public API: etcd3 decodes every response with its own proto-loader options and offers no
 * way to choose another deserializer. Its connection pool (`withConnection`, the `ICallable` interface its own KV
 * client is built on) hands out the gRPC client of a host together with the auth metadata, so a call made there
 * goes over the same channel, TLS credentials, token and call options (our interceptors) as every other call; only
 * the response deserializer differs. The request is encoded by the KV service's own serializer, and the method path
 * comes from the same service definition. An expired token is renewed as the client's own calls renew it: one call
 * through the client (which re-authenticates on that error), then this call once more.
 * Pinned by test/etcd/etcd-range-client.test.ts (same pages as the client's decoding, auth and TLS).
 */
import { Etcd3, EtcdInvalidAuthTokenError, type IRangeRequest } from "etcd3";
import { readRangePage, type RangePage } from "./etcd-range-page.js";

/** A gRPC client's view of one method, from `makeClientConstructor`'s service definition. */
interface MethodDefinition {
  readonly path: string;
  readonly requestSerialize: (value: unknown) => Buffer;
}

type CallOptionsOf = NonNullable<Parameters<Etcd3["kv"]["range"]>[1]>;

export class RangeEtcd3 extends Etcd3 {
  /** One page of a range, read from etcd's bytes. */
  async rangePage(request: IRangeRequest): Promise<RangePage> {
    try {
      return readRangePage(await this.rangeBytes(request));
    } catch (e) {
      if (!(e instanceof EtcdInvalidAuthTokenError)) throw e;
      // The client's own call drops the stale token and authenticates again before it answers.
      await this.kv.range({ key: request.key, count_only: true });
      return readRangePage(await this.rangeBytes(request));
    }
  }

  private rangeBytes(request: IRangeRequest): Promise<Buffer> {
    const factory = this.pool.callOptionsFactory;
    const options: CallOptionsOf =
      (typeof factory === "function"
        ? factory({ service: "KV", method: "range", params: request, isStream: false })
        : factory) ?? {};
    return this.pool.withConnection("KV", ({ client, metadata }) => {
      const service = (client.constructor as unknown as { service?: Record<string, MethodDefinition> }).service;
      const range = service?.["Range"];
      if (!range) throw new Error("etcd3's KV client has no Range method definition");
      return new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest<unknown, Buffer>(
          range.path,
          range.requestSerialize,
          (bytes: Buffer) => bytes,
          request,
          metadata,
          options,
          (error, bytes) =>
            error || !bytes ? reject(error ?? new Error("etcd sent no range response")) : resolve(bytes),
        );
      });
    });
  }
}
