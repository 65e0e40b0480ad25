import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real nginx/etcd tests each take their own ports and dirs; two cores, so keep parallelism modest.
    maxWorkers: 2,
    // Every nginx a test file started is stopped when the file ends; the global teardown stops what a crash left.
    setupFiles: ["test/helpers/setup.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    fileParallelism: true,
    projects: [
      { extends: true, test: { name: "all", include: ["src/**/*.test.ts", "test/**/*.test.ts"] } },
      {
        // The core end-to-end suites again, with endpoints pushed to the Lua balancer instead of rendered.
        extends: true,
        test: {
          name: "core-dynamic",
          include: ["test/nginx/{routing,upstream,tls}.test.ts"],
          env: { NGINX_LB_TEST_ENDPOINTS_MODE: "dynamic" },
        },
      },
      {
        // And a third time with routes and certificates pushed to the Lua router (one server per port, plain or TLS).
        extends: true,
        test: {
          name: "core-routes-dynamic",
          include: ["test/nginx/{routing,upstream,tls}.test.ts"],
          env: { NGINX_LB_TEST_ENDPOINTS_MODE: "dynamic", NGINX_LB_TEST_ROUTES_MODE: "dynamic" },
        },
      },
    ],
  },
});
