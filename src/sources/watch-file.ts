import { watch } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * Calls `onChange` (debounced) when a file is written, replaced by rename, or created. Watches the directory,
 * because config centres and editors replace files rather than write them in place.
 */
export function watchFile(file: string, onChange: () => void, signal: AbortSignal, debounceMs = 50): void {
  const name = basename(file);
  let timer: NodeJS.Timeout | null = null;
  try {
    const watcher = watch(dirname(file), { persistent: false, signal }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      if (timer) clearTimeout(timer);
      timer = setTimeout(onChange, debounceMs);
    });
    watcher.on("error", () => undefined);
  } catch {
    // The directory may not exist yet; SIGUSR2 still re-reads the file.
  }
  signal.addEventListener("abort", () => timer && clearTimeout(timer));
}
