import { describe, expect, it } from "vitest";
import { DEFAULT_OUTLIER } from "../render/dynamic.js";
import { OUTLIER_DEFAULT_TEXT, parseOutlierFlag } from "./outlier-flag.js";

describe("parseOutlierFlag", () => {
  it("reads its default text as the renderer's defaults", () => {
    expect(parseOutlierFlag(OUTLIER_DEFAULT_TEXT)).toEqual({ ok: true, value: DEFAULT_OUTLIER });
  });
  it.each([
    ["3", { errors: 3, baseMs: 30_000, maxMs: 300_000, maxPercent: 50 }],
    ["3,10s", { errors: 3, baseMs: 10_000, maxMs: 300_000, maxPercent: 50 }],
    ["3,500ms,2s", { errors: 3, baseMs: 500, maxMs: 2_000, maxPercent: 50 }],
    ["3, 10m , 1h , 100%", { errors: 3, baseMs: 600_000, maxMs: 3_600_000, maxPercent: 100 }],
    ["5,30", { errors: 5, baseMs: 30_000, maxMs: 300_000, maxPercent: 50 }],
    ["1,20m", { errors: 1, baseMs: 1_200_000, maxMs: 1_200_000, maxPercent: 50 }],
    ["off", { ...DEFAULT_OUTLIER, errors: 0 }],
  ])("%s", (text, value) => expect(parseOutlierFlag(text)).toEqual({ ok: true, value }));
  it.each([
    "",
    "0",
    "five",
    "5,",
    "5,30x",
    "5,30s,10s",
    "5,50ms",
    "5,30s,2h",
    "5,30s,300s,50",
    "5,30s,300s,0%",
    "5,30s,300s,101%",
    "5,30s,300s,50%,1",
    "1001",
  ])("refuses %j", (text) => expect(parseOutlierFlag(text).ok).toBe(false));
});
