/**
 * SIGHUP reload in real processes: the server re-reads its config file and key file, the client (no
 * config file) its key file. A key added to the server's file admits a client holding it; a session that
 * was live all along goes on; a broken config or key file is refused with one line and the old ones stay.
 */

import { expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKey, loadKeys } from "../src/secure/keys.ts";
import { appExchange, converse, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups } from "./helpers/util.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();

function spawn(args: string[]): Proc {
  const env = { ...(process.env as Record<string, string>) };
  delete env.STRIPER_KEY;
  return Proc.spawn([process.execPath, MAIN, ...args], cleanup, { env });
}

/** Writes a key file readable by its owner only. */
function writeKeys(path: string, keys: string[]): void {
  writeFileSync(path, `${keys.join("\n")}\n`);
  chmodSync(path, 0o600);
}

/** The fingerprint the proxies log for a key. */
const fingerprint = (dir: string, key: string): string => {
  const f = join(dir, `fp-${Math.random()}`);
  writeKeys(f, [key]);
  return loadKeys({ keyFile: f, env: {} }).keys[0]!.id;
};

/** An echo of `size` bytes through `port`: exact, clean end. */
async function echoes(port: number, size: number, seed: number): Promise<void> {
  const data = randomData(size, seed);
  const r = await appExchange(port, data, { timeoutMs: 60_000 });
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(r.received)).toBe(sha256(data));
}

test("SIGHUP: a key added to the server's file admits a client holding it; a live session goes on; broken files are refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "striper-reload-"));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const [keyA, keyB] = [generateKey(), generateKey()];
  const [idA, idB] = [fingerprint(dir, keyA), fingerprint(dir, keyB)];
  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());

  const serverKeys = join(dir, "server.key");
  writeKeys(serverKeys, [keyA]);
  const config = join(dir, "server.toml");
  const toml = `mode = "server"\nlisten = "127.0.0.1:0"\ntarget = "127.0.0.1:${target.port}"\nkey-file = "${serverKeys}"\nmetrics = "127.0.0.1:0"\n`;
  writeFileSync(config, toml);
  const server = spawn(["--config", config]);
  const serverPort = await server.listeningPort("server");
  const ops = (await server.waitFor(/metrics on (http:\/\/[^ ]+\/)/))[1]!;

  const aKey = join(dir, "a.key");
  writeKeys(aKey, [keyA]);
  const clientA = spawn(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${serverPort}`, "--key-file", aKey]);
  const portA = await clientA.listeningPort("client");
  const bKey = join(dir, "b.key");
  writeKeys(bKey, [keyB]);
  // No standby pool: its dials with the unknown key would be refused handshakes too (counted below).
  const clientB = spawn(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${serverPort}`, "--key-file", bKey, "--handshake-timeout", "1s", "--pool", "0"]);
  const portB = await clientB.listeningPort("client");

  // A session through client A, live across every reload below.
  const live = await converse(portA);
  const first = randomData(256 * 1024, 1);
  live.send(first);
  await live.received(first.byteLength);

  // Key B is unknown to the server: silence, so client B's session fails (E_AUTH) and is counted.
  const before = await appExchange(portB, randomData(1000, 2), { timeoutMs: 30_000 });
  expect(before.cleanEnd).toBe(false);
  await clientB.waitFor(/session \w+ end .* reason E_AUTH/);

  // The server's file gets key B; SIGHUP applies it to new sessions.
  writeKeys(serverKeys, [keyA, keyB]);
  server.kill("SIGHUP");
  await server.waitFor(new RegExp(`keys now ${idA},${idB}`));
  await server.waitFor(/SIGHUP: config reloaded \(no option changed\)/);
  await echoes(portB, 2 * 1024 * 1024, 3);

  // The client has no config file: SIGHUP re-reads its key file all the same (key A first now).
  writeKeys(bKey, [keyA]);
  clientB.kill("SIGHUP");
  await clientB.waitFor(new RegExp(`key now ${idA}`));
  await echoes(portB, 1024 * 1024, 4);

  // A broken config: one line, the running config and keys stay.
  const from = server.text.length;
  writeFileSync(config, `${toml}window = "big"\n`);
  server.kill("SIGHUP");
  await server.waitFor(/SIGHUP: reload refused, keeping the running config: \S+server\.toml:6: window: /, undefined, from);
  // A key file that no longer parses: refused too.
  writeFileSync(config, toml);
  writeFileSync(serverKeys, "not a key\n");
  server.kill("SIGHUP");
  await server.waitFor(/SIGHUP: reload refused, keeping the running config: E_KEY\w* /, undefined, from);
  expect(server.text.slice(from)).not.toMatch(/keys now|config reloaded/);
  await echoes(portA, 1024 * 1024, 5);
  await echoes(portB, 1024 * 1024, 6);

  // The session live since before the first reload is whole.
  const second = randomData(256 * 1024, 7);
  live.send(second);
  const all = await live.received(first.byteLength + second.byteLength);
  const r = await live.end();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(all)).toBe(sha256(Buffer.concat([first, second])));
  // The refused handshake of client B was counted by reason.
  const metrics = await (await fetch(`${ops}metrics`)).text();
  expect(metrics).toMatch(/^striper_handshake_rejections_total\{reason="bad-auth"\} 1$/m);

  for (const p of [server, clientA, clientB]) p.kill("SIGTERM");
  expect(await Promise.all([server.exited, clientA.exited, clientB.exited])).toEqual([0, 0, 0]);
});
