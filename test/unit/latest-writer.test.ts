import { describe, expect, test } from "vitest";
import { LatestWriter } from "../../src/nginx/latest-writer.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("LatestWriter", () => {
  test("values offered within the delay are written once, the latest", async () => {
    const written: number[] = [];
    const w = new LatestWriter<number>(async (v) => written.push(v) > 0, 30);
    for (let i = 1; i <= 5; i++) w.offer(i);
    expect(written).toEqual([]);
    await sleep(200);
    expect(written).toEqual([5]);
  });

  test("a value offered during a write is written right after it; flush writes what waits now", async () => {
    const written: number[] = [];
    let release: () => void = () => undefined;
    const w = new LatestWriter<number>(async (v) => {
      written.push(v);
      if (v === 1) await new Promise<void>((r) => (release = r));
      return true;
    }, 10_000);
    w.offer(1);
    const flushed = w.flush();
    await sleep(10);
    w.offer(2);
    w.offer(3);
    release();
    await flushed;
    expect(written).toEqual([1, 3]);
    w.offer(4);
    await w.flush();
    expect(written).toEqual([1, 3, 4]);
  });

  test("a write that throws does not stop later writes", async () => {
    const written: number[] = [];
    const w = new LatestWriter<number>(async (v) => {
      if (v === 1) throw new Error("bug");
      return written.push(v) > 0;
    }, 1);
    w.offer(1);
    await w.flush();
    w.offer(2);
    await w.flush();
    expect(written).toEqual([2]);
  });
});

test("LatestWriter: a value offered with `now` is written without the wait", async () => {
  const written: number[] = [];
  const w = new LatestWriter<number>(async (v) => written.push(v) > 0, 10_000);
  w.offer(1);
  w.offer(2, true);
  await sleep(50);
  expect(written).toEqual([2]);
  await w.flush();
});

test("LatestWriter: the value on disk, written here or said written, is not written again; a failed one is", async () => {
  const written: number[] = [];
  let fail = false;
  const w = new LatestWriter<number>(async (v) => !fail && written.push(v) > 0, 1);
  w.written(1);
  w.offer(1, true);
  await w.flush();
  expect(written).toEqual([]);
  w.offer(2, true);
  await w.flush();
  w.offer(2, true);
  await w.flush();
  expect(written).toEqual([2]);
  fail = true;
  w.offer(3, true);
  await w.flush();
  fail = false;
  w.offer(3, true);
  await w.flush();
  expect(written).toEqual([2, 3]);
});
