import { builtinModules } from "node:module";
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * model/ and render/ are pure: no I/O (no Node module) and no knowledge of the daemon's parts, so they run and test
 * without a machine. model/ also stays below render/.
 */
const pureLayer = (extra) => ({
  paths: builtinModules.map((name) => ({ name, message: "model/ and render/ do no I/O: pass the result in instead." })),
  patterns: [
    { group: ["node:*"], message: "model/ and render/ do no I/O: pass the result in instead." },
    {
      group: [
        "**/sources/**",
        "**/nginx/**",
        "**/admin/**",
        "**/cli/**",
        "**/state/**",
        "**/reconciler/**",
        "**/app",
        "**/app.js",
        ...extra,
      ],
      message: "model/ and render/ know nothing of the daemon's parts: they depend only on model/ (and render/ on it).",
    },
  ],
});

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "bin/", "**/*.lua"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: { parserOptions: { project: "./tsconfig.test.json" } },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["src/**/*.ts"],
    ignores: ["src/cli/**", "src/shared/log.ts"],
    rules: { "no-console": "error" },
  },
  {
    files: ["src/model/**/*.ts"],
    ignores: ["**/*.test.ts"],
    rules: { "no-restricted-imports": ["error", pureLayer(["**/render/**"])] },
  },
  {
    files: ["src/render/**/*.ts"],
    ignores: ["**/*.test.ts"],
    rules: { "no-restricted-imports": ["error", pureLayer([])] },
  },
);
