import { watch } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * Calls `onChange` once the file's writer looks done (no event for `debounceMs`) when the file is written, replaced by
 * rename, or created. Watches the directory, because config centres and editors replace files rather than write them
 * in place.
 *
 * With `onReplaced`, a rename event (the name now points at another file: one renamed into place, or one created or
 * deleted) is tried at once instead: `onReplaced` reads the file and resolves true when it was whole and taken. Why
 * that is safe without waiting: a file renamed into place is complete the moment its name appears (rename is atomic),
 * so the 50 ms wait would only delay every change a config centre makes. A file created under the name and still being
 * written, or one deleted, reads as incomplete (a prefix of a JSON object is never a whole one) or missing: then
 * `onReplaced` resolves false, says nothing, and the wait for the writer applies as for an in-place write, whose
 * events ("change") always wait. test/unit/services-watch.test.ts pins both: a rename taken well within the wait, and
 * slow writers in place (over an existing file, and creating it) never applying or reporting a half-written file.
 */
export function watchFile(
  file: string,
  onChange: () => void,
  signal: AbortSignal,
  debounceMs = 50,
  onReplaced?: () => Promise<boolean>,
): void {
  const name = basename(file);
  let timer: NodeJS.Timeout | null = null;
  const wait = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  try {
    const watcher = watch(dirname(file), { persistent: false, signal }, (event, changed) => {
      if (changed !== null && changed !== name) return;
      if (event !== "rename" || onReplaced === undefined) return wait();
      if (timer) clearTimeout(timer);
      timer = null;
      onReplaced().then(
        (taken) => {
          if (!taken && !signal.aborted) wait();
        },
        () => signal.aborted || wait(),
      );
    });
    watcher.on("error", () => undefined);
  } catch {
    // The directory may not exist yet; SIGUSR2 still re-reads the file.
  }
  signal.addEventListener("abort", () => timer && clearTimeout(timer));
}
