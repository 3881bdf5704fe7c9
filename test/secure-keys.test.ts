/**
 * Pre-shared keys: generation, parsing (file and STRIPER_KEY syntax), the one-line typed errors, the
 * permission warning, and fingerprints. Key files are real files in a temporary directory.
 */

import type { ErrorCode } from "../src/errors.ts";
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StriperError } from "../src/errors.ts";
import { KeyError } from "../src/secure/errors.ts";
import { KEY_ENV, MAX_KEYS, fingerprint, generateKey, keyFromBytes, loadKeys, parseKeys } from "../src/secure/keys.ts";

const dir = mkdtempSync(join(tmpdir(), "striper-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
/** Writes `text` to a new file with `mode`; returns its path. */
function keyFile(text: string, mode = 0o600): string {
  const path = join(dir, `key${fileNo++}`);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

/** Runs `fn`, expects a KeyError with `code` whose message is one line and contains `includes`. */
function expectKeyError(fn: () => unknown, code: ErrorCode, includes: string): KeyError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(KeyError);
  expect(caught).toBeInstanceOf(StriperError);
  const e = caught as KeyError;
  expect(e.code).toBe(code);
  expect(e.message).toContain(includes);
  expect(e.message).not.toContain("\n");
  return e;
}

const K1 = generateKey();
const K2 = generateKey();
const K3 = generateKey();

describe("generateKey", () => {
  test("makes 44 characters of base64 that decode to 32 bytes, different every time", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const k = generateKey();
      expect(k).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(Buffer.from(k, "base64").byteLength).toBe(32);
      keys.add(k);
    }
    expect(keys.size).toBe(100);
  });

  test("a generated key parses back to its bytes", () => {
    const [key] = parseKeys(K1, "test");
    expect(Buffer.from(key!.bytes).toString("base64")).toBe(K1);
  });
});

describe("parseKeys", () => {
  test("reads several keys in order, ignoring blank lines, comments and surrounding whitespace", () => {
    const text = `# production keys\n\n   ${K1}   \n\t${K2} # the new one\r\n\n# old:\n${K3}\n`;
    const keys = parseKeys(text, "test");
    expect(keys.map((k) => Buffer.from(k.bytes).toString("base64"))).toEqual([K1, K2, K3]);
  });

  test("STRIPER_KEY syntax also separates keys with commas", () => {
    const keys = parseKeys(` ${K1} , ${K2}\n${K3}`, KEY_ENV, true);
    expect(keys.length).toBe(3);
    expect(Buffer.from(keys[2]!.bytes).toString("base64")).toBe(K3);
  });

  test("a comma in a key file is not a separator", () => {
    expectKeyError(() => parseKeys(`${K1},${K2}`, "key file f"), "E_KEY_BASE64", "key file f line 1");
  });

  test("bad base64 names the line and does not echo the key", () => {
    const bad = K2.slice(0, 20) + "*" + K2.slice(21);
    const e = expectKeyError(() => parseKeys(`${K1}\n\n${bad}\n`, "key file f"), "E_KEY_BASE64", "key file f line 3");
    expect(e.message).not.toContain(bad);
    expectKeyError(() => parseKeys(K1.replace("=", "-"), "x"), "E_KEY_BASE64", "x line 1");
    // base64url is not accepted: keygen prints standard base64.
    expectKeyError(() => parseKeys("_".repeat(43) + "=", "x"), "E_KEY_BASE64", "x line 1");
  });

  test("non-canonical base64 (unused bits set in the last character) is refused", () => {
    // 'B' = 000001: the two low bits are unused for a 32-byte key and must be zero ('A', 'E', 'I'...).
    const k = Buffer.alloc(32).toString("base64");
    expect(k.at(-2)).toBe("A");
    const bad = k.slice(0, 42) + "B=";
    expectKeyError(() => parseKeys(bad, "x"), "E_KEY_BASE64", "not canonical");
  });

  test("a key of the wrong length says how long it is", () => {
    const short = Buffer.alloc(24, 7).toString("base64");
    const long = Buffer.alloc(48, 7).toString("base64");
    expectKeyError(() => parseKeys(short, "x"), "E_KEY_LENGTH", "x line 1: key is 24 bytes, expected 32");
    expectKeyError(() => parseKeys(`${K1}\n${long}`, "x"), "E_KEY_LENGTH", "x line 2: key is 48 bytes, expected 32");
    expectKeyError(() => parseKeys(Buffer.alloc(31).toString("base64"), "x"), "E_KEY_LENGTH", "31 bytes");
  });

  test("at most 16 keys", () => {
    const sixteen = Array.from({ length: MAX_KEYS }, () => generateKey());
    expect(parseKeys(sixteen.join("\n"), "x").length).toBe(16);
    expectKeyError(() => parseKeys([...sixteen, K1].join("\n"), "x"), "E_KEY_COUNT", "x line 17: more than 16 keys");
  });

  test("text with no key is E_KEY_MISSING", () => {
    expectKeyError(() => parseKeys("# nothing here\n\n   \n", "key file f"), "E_KEY_MISSING", "key file f holds no key");
  });
});

describe("loadKeys", () => {
  test("reads a key file with mode 600 without warnings", () => {
    const path = keyFile(`${K1}\n${K2}\n`);
    const loaded = loadKeys({ keyFile: path, env: {} });
    expect(loaded.keys.length).toBe(2);
    expect(loaded.source).toBe(`key file ${path}`);
    expect(loaded.warnings).toEqual([]);
  });

  test("a key file readable by group or others loads with a warning", () => {
    for (const mode of [0o644, 0o640, 0o604]) {
      const path = keyFile(K1, mode);
      const loaded = loadKeys({ keyFile: path });
      expect(loaded.keys.length).toBe(1);
      expect(loaded.warnings.length).toBe(1);
      expect(loaded.warnings[0]).toContain("readable by other users");
      expect(loaded.warnings[0]).toContain(`chmod 600 ${path}`);
    }
    expect(loadKeys({ keyFile: keyFile(K1, 0o400) }).warnings).toEqual([]);
  });

  test("reads STRIPER_KEY when there is no key file", () => {
    const loaded = loadKeys({ env: { [KEY_ENV]: `${K1},${K2}` } });
    expect(loaded.source).toBe(KEY_ENV);
    expect(loaded.keys.map((k) => Buffer.from(k.bytes).toString("base64"))).toEqual([K1, K2]);
  });

  test("--key-file wins over STRIPER_KEY, with a warning", () => {
    const loaded = loadKeys({ keyFile: keyFile(K1), env: { [KEY_ENV]: K2 } });
    expect(Buffer.from(loaded.keys[0]!.bytes).toString("base64")).toBe(K1);
    expect(loaded.warnings).toEqual([`${KEY_ENV} is ignored: --key-file was given`]);
  });

  test("no key anywhere says how to make one", () => {
    const e = expectKeyError(() => loadKeys({ env: { [KEY_ENV]: "  " } }), "E_KEY_MISSING", "keygen");
    expect(e.message).toContain("--key-file");
    expect(e.message).toContain("--no-auth");
  });

  test("an unreadable, missing, oversized or non-regular key file is E_KEY_FILE", () => {
    expectKeyError(() => loadKeys({ keyFile: join(dir, "absent") }), "E_KEY_FILE", "ENOENT");
    const sub = join(dir, "adir");
    mkdirSync(sub);
    expectKeyError(() => loadKeys({ keyFile: sub }), "E_KEY_FILE", "not a regular file");
    expectKeyError(() => loadKeys({ keyFile: keyFile("#".repeat(70_000)) }), "E_KEY_FILE", "not a key file");
    expectKeyError(() => loadKeys({ keyFile: "/dev/zero" }), "E_KEY_FILE", "not a regular file");
  });

  test("parse errors in a file name the file and line", () => {
    const path = keyFile(`${K1}\nnot-a-key\n`);
    expectKeyError(() => loadKeys({ keyFile: path }), "E_KEY_BASE64", `key file ${path} line 2`);
  });
});

describe("fingerprint", () => {
  test("is the first 8 hex digits of SHA-256(label ‖ key), distinct per key", () => {
    const bytes = new Uint8Array(32).map((_, i) => i);
    // Computed independently (Python hashlib): sha256(b"tcp-striper v2 key id" + bytes(range(32)))[:8]
    expect(fingerprint(bytes)).toBe("771ac07d");
    expect(keyFromBytes(bytes).id).toBe("771ac07d");
    const h = createHash("sha256").update(bytes).digest("hex").slice(0, 8);
    expect(fingerprint(bytes)).not.toBe(h); // labelled, not a bare hash of the key
    const [a, b] = parseKeys(`${K1}\n${K2}`, "x");
    expect(a!.id).toMatch(/^[0-9a-f]{8}$/);
    expect(a!.id).not.toBe(b!.id);
  });
});
