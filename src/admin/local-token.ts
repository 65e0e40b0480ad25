import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { join } from "node:path";

/** The file holding the local operator token, in the state dir (which only the controller's user can enter). */
export const localTokenPath = (stateDir: string): string => join(stateDir, "admin-token");

/**
 * Writes a fresh random token (mode 0600) for an admin server that has no configured token. Requests without it are
 * still served on loopback; it only lets whoever can read the state dir claim the event-stream slots kept for
 * authenticated clients, so other local users cannot lock the operator out of the live dashboard.
 */
export async function writeLocalToken(stateDir: string): Promise<string> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const token = randomBytes(24).toString("hex");
  const fh = await open(
    localTokenPath(stateDir),
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.chmod(0o600);
    await fh.writeFile(`${token}\n`);
  } finally {
    await fh.close();
  }
  return token;
}
