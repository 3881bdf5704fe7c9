/**
 * The single binary (`npm run build` = bun build --compile): built here into a temporary directory,
 * copied alone into another, and run there with no Bun, no node_modules and no PATH: --help,
 * --version, --check-config, keygen, a keyed transfer (the key from its own keygen) through
 * relay → client → link → server → target, all four modes being the compiled binary, and demo.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VERSION } from "../src/version.ts";
import { loadKeys } from "../src/secure/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups } from "./helpers/util.ts";

const cleanup = cleanups();
const ROOT = new URL("..", import.meta.url).pathname;
let work = "";
let dir = "";
let bin = "";

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "striper-build-"));
  // The same command as `npm run build`, with the output elsewhere so a checkout's dist/ is untouched.
  const build = Bun.spawn([process.execPath, "build", "./src/main.ts", "--compile", "--outfile", join(work, "build", "tcp-striper")], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, err] = await Promise.all([build.exited, new Response(build.stderr).text()]);
  if (code !== 0) throw new Error(`bun build --compile failed (${code}):\n${err}`);
  dir = join(work, "alone");
  Bun.spawnSync(["mkdir", dir]);
  bin = join(dir, "tcp-striper");
  copyFileSync(join(work, "build", "tcp-striper"), bin);
  Bun.spawnSync(["chmod", "755", bin]);
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Runs the binary in its lonely directory with an empty environment (no PATH to a Bun). */
function run(args: string[]): Proc {
  return Proc.spawn([bin, ...args], cleanup, { cwd: dir, env: { PATH: "/nonexistent", HOME: dir } });
}

/** A key made by the binary's own keygen, in a file readable by its owner only (outside its directory). */
async function keygen(name: string): Promise<string> {
  const p = run(["keygen"]);
  expect(await p.exited).toBe(0);
  const key = await p.stdout;
  expect(key).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
  const file = join(work, name);
  writeFileSync(file, key);
  chmodSync(file, 0o600);
  return file;
}

test("the binary is one file and answers --help, --version and --check-config with nothing beside it", async () => {
  expect(readdirSync(dir)).toEqual(["tcp-striper"]);
  const head = new Uint8Array(await Bun.file(bin).slice(0, 4).arrayBuffer());
  expect([...head]).toEqual([0x7f, 0x45, 0x4c, 0x46]); // ELF
  expect(statSync(bin).size).toBeGreaterThan(1e6);

  const help = run(["--help"]);
  expect(await help.exited).toBe(0);
  expect(await help.stdout).toContain("usage:");
  const version = run(["--version"]);
  expect(await version.exited).toBe(0);
  expect(await version.stdout).toBe(`tcp-striper ${VERSION} (bun ${Bun.version}, ${process.platform}-${process.arch})\n`);
  const check = run(["--config", join(ROOT, "deploy/client.toml"), "--key-file", await keygen("check.key"), "--check-config"]);
  expect(await check.exited).toBe(0);
  expect(await check.stdout).toContain("config ok: client mode, 1 listener");
  const bad = run(["server", "--listen", "nope"]);
  expect(await bad.exited).toBe(2);
});

test("keygen, then a keyed transfer through relay, client, link and server, every one of them the compiled binary", async () => {
  const keyFile = await keygen("transfer.key");
  const id = loadKeys({ keyFile, env: {} }).keys[0]!.id;

  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());
  const server = run(["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`, "--key-file", keyFile]);
  const serverPort = await server.listeningPort("server");
  await server.waitFor(new RegExp(`keys ${id}`));
  const link = run(["link", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${serverPort}`, "--rate", "0"]);
  const linkPort = await link.listeningPort("link");
  const client = run(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${linkPort}`, "--stripes", "3", "--key-file", keyFile]);
  const clientPort = await client.listeningPort("client");
  const relay = run(["relay", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${clientPort}`]);
  const relayPort = await relay.listeningPort("relay");

  const data = randomData(4 * 1024 * 1024, 12);
  const r = await appExchange(relayPort, data);
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(r.received)).toBe(sha256(data));
  await client.waitFor(/session \w+ end up 4\.0 MiB down 4\.0 MiB .* reason ok/);

  for (const p of [relay, client, link, server]) p.kill("SIGTERM");
  expect(await Promise.all([relay.exited, client.exited, link.exited, server.exited])).toEqual([0, 0, 0, 0]);
});

test("demo runs from the binary alone (its target, link and proxies are all inside it)", async () => {
  const demo = run(["demo", "--seconds", "1"]);
  expect(await demo.exited).toBe(0);
  expect(await demo.stdout).toMatch(/speed-up +: \d+\.\d+x/);
});
