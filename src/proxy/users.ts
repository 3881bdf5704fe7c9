/**
 * The SOCKS front's users (`--socks-users FILE`, issue 13): who may use a client shared on a LAN, by
 * username and password (RFC 1929 for SOCKS5; `Proxy-Authorization: Basic` for HTTP CONNECT on the same
 * port, so that neither door is open when the other is locked).
 *
 * File format: one `user:password` per line (the user has no ":", the password may); blank lines and
 * lines starting with "#" are ignored; each 1–255 bytes (RFC 1929's limits); at most 10,000 users and
 * 1 MiB. Errors are E_CONFIG naming the file and the line, never the password.
 *
 * Checking compares SHA-256 digests in constant time, so neither the length nor the content of a
 * password leaks through timing, and a wrong user costs the same as a wrong password.
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { StriperError } from "../errors.ts";

/** Most users in a file. */
export const MAX_USERS = 10_000;
/** Largest users file, bytes. */
export const MAX_USERS_FILE = 1 << 20;

/** Users and the digests of their passwords. */
export class SocksUsers {
  private readonly digests = new Map<string, Buffer>();
  private static readonly NOBODY = createHash("sha256").update("tcp-striper: no such user").digest();

  /** `pairs`: user → password. */
  constructor(pairs: Iterable<readonly [string, string]>) {
    for (const [u, p] of pairs) this.digests.set(u, digest(p));
  }

  get size(): number {
    return this.digests.size;
  }

  /** Whether `user` with `password` may log in; as long for a wrong user as for a wrong password. */
  check(user: Uint8Array | string, password: Uint8Array | string): boolean {
    const u = typeof user === "string" ? user : Buffer.from(user).toString("latin1");
    const want = this.digests.get(u);
    const ok = timingSafeEqual(want ?? SocksUsers.NOBODY, digest(password));
    return ok && want !== undefined;
  }
}

function digest(p: Uint8Array | string): Buffer {
  return createHash("sha256").update(typeof p === "string" ? Buffer.from(p, "latin1") : p).digest();
}

/** Parses a users file's text; `source` names it in errors. Throws StriperError E_CONFIG. */
export function parseUsers(text: string, source: string): SocksUsers {
  const pairs: [string, string][] = [];
  const seen = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const where = `${source}:${i + 1}`;
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const colon = line.indexOf(":");
    if (colon < 0) throw new StriperError("E_CONFIG", `${where}: expected user:password`);
    const user = line.slice(0, colon);
    const password = line.slice(colon + 1);
    // RFC 1929 carries each in a u8-length field; latin1 keeps one byte per character, as the wire has it.
    const ub = Buffer.byteLength(user, "latin1");
    const pb = Buffer.byteLength(password, "latin1");
    if (ub < 1 || ub > 255 || pb < 1 || pb > 255) throw new StriperError("E_CONFIG", `${where}: user and password must each be 1-255 bytes`);
    if (/[^\x20-\x7e\xa0-\xff]/.test(user) || /[^\x20-\x7e\xa0-\xff]/.test(password)) {
      throw new StriperError("E_CONFIG", `${where}: user and password must be printable characters`);
    }
    if (seen.has(user)) throw new StriperError("E_CONFIG", `${where}: user "${user}" given twice`);
    seen.add(user);
    pairs.push([user, password]);
    if (pairs.length > MAX_USERS) throw new StriperError("E_CONFIG", `${source}: more than ${MAX_USERS} users`);
  }
  if (pairs.length === 0) throw new StriperError("E_CONFIG", `${source}: no users (expected user:password lines)`);
  return new SocksUsers(pairs);
}

/** Reads a users file: the users, and warnings (a file others may read). Throws StriperError E_CONFIG. */
export function loadUsers(path: string): { users: SocksUsers; warnings: string[] } {
  const source = `users file ${path}`;
  const warnings: string[] = [];
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new StriperError("E_CONFIG", `${source} is not a regular file`);
    if (st.size > MAX_USERS_FILE) throw new StriperError("E_CONFIG", `${source} is larger than ${MAX_USERS_FILE} bytes`);
    if ((st.mode & 0o044) !== 0) {
      warnings.push(`${source} is readable by other users (mode ${(st.mode & 0o777).toString(8).padStart(3, "0")}): chmod 600 ${path}`);
    }
    text = readFileSync(path, "latin1");
  } catch (err) {
    if (err instanceof StriperError) throw err;
    throw new StriperError("E_CONFIG", `cannot read ${source}: ${String((err as { code?: unknown }).code ?? (err as Error).message)}`, { cause: err });
  }
  return { users: parseUsers(text, source), warnings };
}
