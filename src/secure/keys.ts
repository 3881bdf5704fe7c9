/**
 * Pre-shared keys: generating one, parsing a key file or STRIPER_KEY, and a short fingerprint for logs.
 *
 * A key is 32 random bytes written as standard base64 (44 characters, `=`-padded), one per line. A key
 * file holds 1..16 keys: the server accepts any of them, the client uses the first, which is how a key
 * is rotated without dropping anyone. There is no `--key` flag: a key on the command line shows in `ps`.
 * Error messages name the source and line, never the key text.
 */

import { createHash, randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { KEY_SIZE } from "./constants.ts";
import { KeyError } from "./errors.ts";

/** Most keys one file or STRIPER_KEY may hold (the server trial-opens every hello with each). */
export const MAX_KEYS = 16;
/** Name of the environment variable that may hold the keys. */
export const KEY_ENV = "STRIPER_KEY";
/** A key file larger than this is not a key file (16 keys and comments fit many times over). */
const MAX_KEY_FILE = 64 * 1024;
/** Domain-separation label of the fingerprint hash: the fingerprint is never equal to a derived key. */
const FINGERPRINT_LABEL = "tcp-striper v2 key id";
/** Exactly 32 bytes in canonical standard base64: 43 characters and one `=`. */
const KEY_B64 = /^[A-Za-z0-9+/]{43}=$/;
/** Any well-formed standard base64, to tell "wrong length" from "not base64". */
const ANY_B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** One pre-shared key. */
export interface Key {
  /** The 32 key bytes. */
  readonly bytes: Uint8Array;
  /** Non-secret fingerprint for logs: the first 8 hex digits of SHA-256(label ‖ key). */
  readonly id: string;
}

/** Keys and what loading them had to say. */
export interface LoadedKeys {
  /** 1..16 keys in file order: the client uses keys[0]; the server accepts any. */
  keys: Key[];
  /** Where they came from, for logs: `key file PATH` or `STRIPER_KEY`. */
  source: string;
  /** Warnings for the caller to log (e.g. a key file readable by other users); never printed here. */
  warnings: string[];
}

/** A new key: 32 random bytes as base64 (44 characters), what `keygen` prints. */
export function generateKey(): string {
  return randomBytes(KEY_SIZE).toString("base64");
}

/** The fingerprint of a key, as in Key.id. */
export function fingerprint(bytes: Uint8Array): string {
  return createHash("sha256").update(FINGERPRINT_LABEL).update(bytes).digest("hex").slice(0, 8);
}

/** A Key from its 32 bytes (tests and the demo, which makes its own). */
export function keyFromBytes(bytes: Uint8Array): Key {
  if (bytes.byteLength !== KEY_SIZE) throw new KeyError("E_KEY_LENGTH", `key is ${bytes.byteLength} bytes, expected ${KEY_SIZE}`);
  const copy = new Uint8Array(bytes);
  return { bytes: copy, id: fingerprint(copy) };
}

/**
 * Parses key text: one key per line (STRIPER_KEY may also separate them with commas); blank lines,
 * surrounding whitespace and `#` comments (to the end of the line; `#` is not a base64 character) are
 * ignored. `source` names the text in errors. Throws KeyError: E_KEY_BASE64, E_KEY_LENGTH, E_KEY_COUNT,
 * E_KEY_MISSING (no key at all).
 */
export function parseKeys(text: string, source: string, commas = false): Key[] {
  const keys: Key[] = [];
  const lines = text.split(/\r?\n|\r/);
  for (let i = 0; i < lines.length; i++) {
    const hash = lines[i]!.indexOf("#");
    const line = hash >= 0 ? lines[i]!.slice(0, hash) : lines[i]!;
    const items = commas ? line.split(",") : [line];
    for (const raw of items) {
      const item = raw.trim();
      if (item === "") continue;
      const where = `${source} line ${i + 1}`;
      if (keys.length === MAX_KEYS) throw new KeyError("E_KEY_COUNT", `${where}: more than ${MAX_KEYS} keys`);
      keys.push(keyFromBytes(decodeKey(item, where)));
    }
  }
  if (keys.length === 0) throw new KeyError("E_KEY_MISSING", `${source} holds no key`);
  return keys;
}

/** Strict base64 of exactly 32 bytes; anything else is a KeyError naming `where`. */
function decodeKey(text: string, where: string): Uint8Array {
  if (!KEY_B64.test(text)) {
    if (ANY_B64.test(text)) {
      const len = Buffer.from(text, "base64").byteLength;
      throw new KeyError("E_KEY_LENGTH", `${where}: key is ${len} bytes, expected ${KEY_SIZE}`);
    }
    throw new KeyError("E_KEY_BASE64", `${where}: not a base64 key (expected 44 characters, as keygen prints)`);
  }
  const bytes = Buffer.from(text, "base64");
  // Canonical only: the last character's two unused bits must be zero (Buffer.from ignores them).
  if (bytes.toString("base64") !== text) {
    throw new KeyError("E_KEY_BASE64", `${where}: not canonical base64 (the last character is wrong)`);
  }
  return bytes;
}

/** Where keys may come from; `keyFile` wins over the environment variable. */
export interface KeySources {
  /** `--key-file PATH`. */
  keyFile?: string;
  /** The environment (process.env); only STRIPER_KEY is read. */
  env?: Record<string, string | undefined>;
}

/**
 * Loads the keys from `--key-file` or STRIPER_KEY. Throws KeyError E_KEY_MISSING when neither is given
 * (the message says how to make a key), E_KEY_FILE when the file cannot be read, and the parse errors of
 * parseKeys. A key file that group or others may read yields a warning, not an error.
 */
export function loadKeys(from: KeySources): LoadedKeys {
  const warnings: string[] = [];
  const envText = from.env?.[KEY_ENV];
  if (from.keyFile !== undefined) {
    const source = `key file ${from.keyFile}`;
    if (envText !== undefined && envText.trim() !== "") warnings.push(`${KEY_ENV} is ignored: --key-file was given`);
    let text: string;
    try {
      const st = statSync(from.keyFile);
      if (!st.isFile()) throw new KeyError("E_KEY_FILE", `${source} is not a regular file`);
      if (st.size > MAX_KEY_FILE) throw new KeyError("E_KEY_FILE", `${source} is larger than ${MAX_KEY_FILE} bytes: not a key file`);
      if ((st.mode & 0o044) !== 0) {
        const mode = (st.mode & 0o777).toString(8).padStart(3, "0");
        warnings.push(`${source} is readable by other users (mode ${mode}): chmod 600 ${from.keyFile}`);
      }
      text = readFileSync(from.keyFile, "utf8");
    } catch (err) {
      if (err instanceof KeyError) throw err;
      const reason = (err as { code?: unknown }).code ?? (err as Error).message;
      throw new KeyError("E_KEY_FILE", `cannot read ${source}: ${String(reason)}`, { cause: err });
    }
    return { keys: parseKeys(text, source), source, warnings };
  }
  if (envText !== undefined && envText.trim() !== "") {
    return { keys: parseKeys(envText, KEY_ENV, true), source: KEY_ENV, warnings };
  }
  throw new KeyError(
    "E_KEY_MISSING",
    `no key: make one with \`tcp-striper keygen > key && chmod 600 key\` (from a checkout: bun run src/main.ts keygen), then pass --key-file key or set ${KEY_ENV}; --no-auth runs without one, on trusted networks only`,
  );
}
