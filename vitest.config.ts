import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real nginx/etcd tests each take their own ports and dirs; two cores, so keep parallelism modest.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
