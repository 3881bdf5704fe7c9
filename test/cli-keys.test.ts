/**
 * Keys as users handle them, with real processes: `keygen`, `--key-file` and STRIPER_KEY for server and
 * client, several keys per file, malformed keys, the permission warning, no key at all, and `--no-auth`.
 * Key files are real files in a scratch directory.
 */

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKey } from "../src/secure/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups } from "./helpers/util.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();
const dir = mkdtempSync(join(tmpdir(), "striper-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The environment without STRIPER_KEY (the developer's own must not leak into a test). */
function env(extra: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k !== "STRIPER_KEY" && v !== undefined) out[k] = v;
  return { ...out, ...extra };
}

function spawn(args: string[], extra: Record<string, string> = {}): Proc {
  return Proc.spawn([process.execPath, MAIN, ...args], cleanup, { env: env(extra) });
}

let fileNo = 0;
/** A key file with `text`, mode 600 unless told. */
function keyFile(text: string, mode = 0o600): string {
  const path = join(dir, `key${fileNo++}`);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function target() {
  const t = startTarget({ mode: "echo" });
  cleanup.push(() => t.stop());
  return t;
}

const serverArgs = (targetPort: number) => ["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${targetPort}`];
const clientArgs = (serverPort: number) => ["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${serverPort}`, "--stripes", "2"];

async function roundTrip(port: number, seed: number): Promise<void> {
  const data = randomData(1 << 20, seed);
  const r = await appExchange(port, data, { timeoutMs: 20_000 });
  expect(r.error).toBeUndefined();
  expect(sha256(r.received)).toBe(sha256(data));
}

/** Runs a process that must fail at start: exit 2, one line on stderr, nothing on stdout. */
async function refusesToStart(p: Proc): Promise<string> {
  expect(await p.exited).toBe(2);
  await Bun.sleep(20); // the last stderr chunk
  const lines = p.text.trimEnd().split("\n");
  expect(lines.length).toBe(1);
  expect(await p.stdout).toBe("");
  return lines[0]!;
}

describe("keygen", () => {
  test("prints one new key: 44 base64 characters of 32 random bytes and a newline, different every time", async () => {
    const keys: string[] = [];
    for (let i = 0; i < 2; i++) {
      const p = spawn(["keygen"]);
      expect(await p.exited).toBe(0);
      const out = await p.stdout;
      expect(out).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
      expect(Buffer.from(out.trim(), "base64").byteLength).toBe(32);
      keys.push(out);
    }
    expect(keys[0]).not.toBe(keys[1]);
  });

  test("keygen takes no options; --help explains it", async () => {
    const bad = spawn(["keygen", "--bits", "128"]);
    expect(await bad.exited).toBe(2);
    const help = spawn(["keygen", "--help"]);
    expect(await help.exited).toBe(0);
    expect(await help.stdout).toContain("chmod 600");
  });

  test("a reader that has gone away (`keygen | head -c0`): one line on stderr and exit 1, no stack trace", async () => {
    // The pipe's only reader (`true`) has exited before keygen starts, so its write must fail with EPIPE:
    // no race with the reader, unlike `| head -c0`.
    const err = join(dir, "keygen-epipe.err");
    const script = `exec 3> >(exec true); wait $!; "$0" "$1" keygen >&3 2>"$2"; echo "exit $?"`;
    const sh = Bun.spawn(["bash", "-c", script, process.execPath, MAIN, err], { env: env(), stdout: "pipe", stderr: "inherit" });
    expect(await new Response(sh.stdout).text()).toBe("exit 1\n");
    expect(await Bun.file(err).text()).toBe("error: E_OUTPUT cannot write to standard output: EPIPE\n");
  });
});

describe("server and client keys", () => {
  test("the server reads --key-file, the client STRIPER_KEY: a transfer works, and each logs the key's fingerprint, not the key", async () => {
    const key = generateKey();
    const t = target();
    const server = spawn([...serverArgs(t.port), "--key-file", keyFile(`${key}\n`)]);
    const port = await server.listeningPort("server");
    const client = spawn(clientArgs(port), { STRIPER_KEY: key });
    await roundTrip(await client.listeningPort("client"), 1);
    expect(server.text).toMatch(/server listening on \S+ target \S+ keys [0-9a-f]{8}; descriptor limit /);
    expect(client.text).toMatch(/client listening on .* key [0-9a-f]{8}; descriptor limit /);
    for (const p of [server, client]) expect(p.text).not.toContain(key);
  });

  test("several keys per file: the server accepts any of them, the client uses the first of its own", async () => {
    const [k1, k2, k3] = [generateKey(), generateKey(), generateKey()];
    const t = target();
    const server = spawn([...serverArgs(t.port), "--key-file", keyFile(`# the new key first\n${k2}\n\n  ${k1}  \n`)]);
    const port = await server.listeningPort("server");
    // A client still on the old key, and one that has the new key first and an unknown one after it.
    const old = spawn([...clientArgs(port), "--key-file", keyFile(`${k1}\n`)]);
    const next = spawn([...clientArgs(port), "--key-file", keyFile(`${k2}\n${k3}\n`)]);
    await roundTrip(await old.listeningPort("client"), 2);
    await roundTrip(await next.listeningPort("client"), 3);
    // A client whose first key the server does not have is refused, even if a later one would do.
    const wrong = spawn([...clientArgs(port), "--key-file", keyFile(`${k3}\n${k1}\n`), "--handshake-timeout", "300"]);
    const r = await appExchange(await wrong.listeningPort("client"), randomData(100, 4), { timeoutMs: 10_000 });
    expect(r.received.byteLength).toBe(0);
    expect(r.error).toBeDefined();
    await wrong.waitFor(/reason E_AUTH no authenticated reply within 0\.3 s/);
  });

  test("STRIPER_KEY may hold several keys separated by commas", async () => {
    const [k1, k2] = [generateKey(), generateKey()];
    const t = target();
    const server = spawn(serverArgs(t.port), { STRIPER_KEY: `${k1}, ${k2}` });
    const port = await server.listeningPort("server");
    const client = spawn(clientArgs(port), { STRIPER_KEY: k2 });
    await roundTrip(await client.listeningPort("client"), 5);
  });

  test("a key file readable by other users: a warning line, and the proxy runs", async () => {
    const path = keyFile(`${generateKey()}\n`, 0o644);
    const t = target();
    const server = spawn([...serverArgs(t.port), "--key-file", path]);
    await server.listeningPort("server");
    expect(server.text).toContain(`warning: key file ${path} is readable by other users (mode 644): chmod 600 ${path}`);
  });
});

describe("refusing to start: one line, exit 2", () => {
  const key = generateKey();
  const cases: [string, () => string[], RegExp][] = [
    ["bad base64", () => ["--key-file", keyFile(`${key}\n${key.slice(0, 40)}!!!=\n`)], /^error: E_KEY_BASE64 key file \S+ line 2: not a base64 key/],
    ["a key of the wrong length", () => ["--key-file", keyFile(`${Buffer.alloc(16, 7).toString("base64")}\n`)], /^error: E_KEY_LENGTH key file \S+ line 1: key is 16 bytes, expected 32$/],
    ["an empty key file", () => ["--key-file", keyFile("# nothing yet\n")], /^error: E_KEY_MISSING key file \S+ holds no key$/],
    ["a key file that does not exist", () => ["--key-file", join(dir, "nope")], /^error: E_KEY_FILE cannot read key file \S+: ENOENT$/],
    ["no key at all", () => [], /^error: E_KEY_MISSING no key: make one with `tcp-striper keygen > key && chmod 600 key`/],
  ];
  for (const mode of ["server", "client"] as const) {
    for (const [name, flags, line] of cases) {
      test(`${mode}: ${name}`, async () => {
        const base = mode === "server" ? serverArgs(1) : clientArgs(1);
        const text = await refusesToStart(spawn([...base, ...flags()]));
        expect(text).toMatch(line);
        expect(text).not.toContain(key.slice(0, 20)); // never the key text
      });
    }
  }

  test("--no-auth together with --key-file is a usage error", async () => {
    const p = spawn([...serverArgs(1), "--no-auth", "--key-file", keyFile(`${key}\n`)]);
    expect(await p.exited).toBe(2);
    expect(p.text).toContain("--no-auth and --key-file exclude each other");
  });

  test("--check-config checks the key too", async () => {
    const bad = spawn([...serverArgs(1), "--key-file", keyFile("short\n"), "--check-config"]);
    expect(await bad.exited).toBe(2);
    const good = spawn([...serverArgs(1), "--key-file", keyFile(`${key}\n`), "--check-config"]);
    expect(await good.exited).toBe(0);
  });
});

describe("--no-auth", () => {
  test("runs without a key, after a warning at start, on both sides", async () => {
    const t = target();
    const server = spawn([...serverArgs(t.port), "--no-auth"]);
    const port = await server.listeningPort("server");
    const client = spawn([...clientArgs(port), "--no-auth"]);
    await roundTrip(await client.listeningPort("client"), 6);
    for (const p of [server, client]) expect(p.text).toContain("WARNING: --no-auth: stripes are neither authenticated nor encrypted");
  });
});

describe("SIGHUP re-reads the key files", () => {
  test("a key added to the server's file is accepted after SIGHUP; a malformed file keeps the running keys", async () => {
    const [k1, k2] = [generateKey(), generateKey()];
    const t = target();
    const keys = keyFile(`${k1}\n`);
    const config = join(dir, `server${fileNo++}.toml`);
    writeFileSync(config, `mode = "server"\nlisten = "127.0.0.1:0"\ntarget = "127.0.0.1:${t.port}"\nkey-file = "${keys}"\n`);
    const server = spawn(["--config", config]);
    const port = await server.listeningPort("server");
    const client = spawn([...clientArgs(port), "--handshake-timeout", "300"], { STRIPER_KEY: k2 });
    const clientPort = await client.listeningPort("client");
    // Not yet: the server does not have k2.
    const before = await appExchange(clientPort, randomData(100, 7), { timeoutMs: 10_000 });
    expect(before.received.byteLength).toBe(0);
    await client.waitFor(/reason E_AUTH/);
    // Rotation, step 1: the new key goes into the server's file (the old one stays), then SIGHUP.
    writeFileSync(keys, `${k1}\n${k2}\n`);
    const mark = server.text.length;
    server.kill("SIGHUP");
    await server.waitFor(/keys now [0-9a-f]{8},[0-9a-f]{8}/, 10_000, mark);
    // The process's own line (not a worker's: a server of several workers logs it once all have reloaded).
    await server.waitFor(/\dZ SIGHUP: config reloaded/, 10_000, mark);
    await roundTrip(clientPort, 8);
    // A file that no longer parses: the running keys stay, one line says why.
    writeFileSync(keys, "not a key\n");
    const mark2 = server.text.length;
    server.kill("SIGHUP");
    await server.waitFor(/SIGHUP: reload refused, keeping the running config: E_KEY_BASE64/, 10_000, mark2);
    await roundTrip(clientPort, 9);
  });
});
