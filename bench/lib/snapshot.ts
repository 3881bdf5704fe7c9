/**
 * The code under test, frozen: src/ and the bench tools are copied to a temporary directory and every
 * child runs from that copy, so edits to the working tree during a run (other people's commits,
 * half-written files) cannot mix versions within one result set.
 */

import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { generateKey } from "../../src/secure/keys.ts";
import { BENCH_KEY_FILE } from "./chain.ts";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { ROOT, runFrom } from "./proc.ts";

/** Paths copied into the snapshot the children run from. */
const SNAPSHOT_PATHS = ["src", "bench/tools", "bench/lib", "package.json", "tsconfig.json", "bunfig.toml"];

let dir: string | undefined;

/** What was measured: HEAD, whether src/ had uncommitted changes, and a hash of the copied src/. */
export interface CodeUnderTest {
  commit: string;
  dirty: boolean;
  srcSha256: string;
  dir: string;
}

function git(args: string[]): string {
  try {
    return Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "ignore" }).stdout.toString().trim();
  } catch {
    return "";
  }
}

/**
 * Copies the code under test into a temporary directory and makes every child start from there.
 * The hash is a SHA-256 over the copied src/ files (path + content), first 12 hex digits.
 */
export function takeSnapshot(): CodeUnderTest {
  const commit = git(["rev-parse", "--short", "HEAD"]);
  const dirty = git(["status", "--porcelain", "--", "src"]) !== "";
  const d = mkdtempSync(join(tmpdir(), "tcp-striper-e2e-"));
  dir = d;
  for (const p of SNAPSHOT_PATHS) {
    const from = resolve(ROOT, p);
    if (existsSync(from)) cpSync(from, join(d, p), { recursive: true });
  }
  // One fresh key for the run: keyed pairs read it (lib/chain.ts).
  writeFileSync(join(d, BENCH_KEY_FILE), `${generateKey()}\n`, { mode: 0o600 });
  runFrom(d);
  const h = new Bun.CryptoHasher("sha256");
  const walk = (at: string): void => {
    for (const e of readdirSync(at, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = join(at, e.name);
      if (e.isDirectory()) walk(full);
      else {
        h.update(relative(d, full));
        h.update(readFileSync(full));
      }
    }
  };
  walk(join(d, "src"));
  return { commit, dirty, srcSha256: h.digest("hex").slice(0, 12), dir: d };
}

/** Deletes the snapshot (idempotent; called on every way out). */
export function removeSnapshot(): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}
