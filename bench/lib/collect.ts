/**
 * A full collection of the benchmark's own heap, for a figure to run before its clock starts: a change's input (2 MB
 * of services.json and the model it is built from) is garbage by the next change, and the collection it triggers
 * otherwise lands inside the next change's write and counts as the controller's time (bench/change-phases.ts shows it
 * as benchGc). V8's `gc` is only exposed by a flag; set here, so a figure needs no node flag.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}
