/**
 * `server --workers N` with real processes on loopback (issue 14): every stripe of a session on the
 * worker that holds it, sessions spread over the workers, a killed worker taking only its own sessions
 * and coming back, a drain that covers every worker, and the fallback for clients that cannot reach the
 * join ports. Each worker's own report (the primary's /api/workers) is the evidence of where stripes are.
 */

import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { appExchange, randomData, sha256, startTarget, type AppResult } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups, until } from "./helpers/util.ts";
import type { WorkerStatus } from "../src/proxy/primary.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();
const KEY = randomBytes(32).toString("base64");
const SESSIONS = 200;
const STRIPES = 8;
const SIZE = 32 * 1024;

function spawn(args: string[]): Proc {
  return Proc.spawn([process.execPath, MAIN, ...args], cleanup, { env: { ...process.env, STRIPER_KEY: KEY } as Record<string, string> });
}

async function workers(metricsPort: number): Promise<WorkerStatus[]> {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/api/workers`);
  expect(r.status).toBe(200);
  return (await r.json()) as WorkerStatus[];
}

async function healthz(metricsPort: number): Promise<number> {
  return (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status;
}

/** A server of `n` workers, a client of 8 stripes, and an echo target that holds its FIN until `release`. */
async function fleet(n: number, clientHost = "127.0.0.1", extraServer: string[] = []) {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const t = startTarget({ mode: "echo", holdEnd: held });
  cleanup.push(() => t.stop());
  cleanup.push(() => release()); // a failed test must not leave the target holding
  const server = spawn(["server", "--workers", String(n), "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${t.port}`, "--metrics", "127.0.0.1:0", "--drain-timeout", "60s", ...extraServer]);
  const port = Number((await server.waitFor(/server listening on 127\.0\.0\.1:(\d+) target \S+ with \d+ workers/))[1]);
  const metrics = Number((await server.waitFor(/metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
  return { server, port, metrics, release, t };
}

function client(peer: string, extra: string[] = []) {
  return spawn(["client", "--listen", "127.0.0.1:0", "--peer", peer, "--stripes", String(STRIPES), "--grow-after", "0", "--grace", "3s", ...extra]);
}

/** Starts `count` sessions that each send SIZE bytes and half-close; resolves per session. */
function sessions(port: number, count: number, seed: number): { data: Uint8Array[]; results: Promise<AppResult>[] } {
  const data = Array.from({ length: count }, (_, i) => randomData(SIZE, seed + i));
  return { data, results: data.map((d) => appExchange(port, d, { timeoutMs: 120_000 })) };
}

/** Waits until the workers together hold `count` sessions, each with all of its stripes; returns the reports. */
async function allHeld(metrics: number, count: number): Promise<WorkerStatus[]> {
  let last: WorkerStatus[] = [];
  const whole = () => last.flatMap((w) => w.report?.sessions ?? []).filter((s) => s.stripes.length === STRIPES).length;
  for (let i = 0; ; i++) {
    last = await workers(metrics);
    if (whole() >= count) return last;
    if (i === 600) throw new Error(`the workers hold ${whole()} whole sessions of ${count}: ${JSON.stringify(last.map((w) => w.report?.sessions.length))}`);
    await Bun.sleep(100);
  }
}

/** Every session is held by exactly one worker, with stripes 0..7; each worker holds a share. */
function expectStripesTogether(ws: WorkerStatus[], count: number): Map<string, number> {
  const owner = new Map<string, number>();
  for (const w of ws) {
    expect(w.state).toBe("ready");
    for (const s of w.report!.sessions) {
      expect(owner.has(s.id)).toBe(false); // never two halves of one session
      owner.set(s.id, w.index);
      expect([...s.stripes].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    }
  }
  expect(owner.size).toBe(count);
  for (const w of ws) expect(w.report!.sessionCount).toBeGreaterThan(0); // each worker carried a share
  return owner;
}

describe("server --workers", () => {
  test("2 workers: 200 sessions of 8 stripes exact, each session on one worker; SIGTERM drains every worker", async () => {
    const f = await fleet(2);
    const c = client(`127.0.0.1:${f.port}`);
    const cport = await c.listeningPort("client");
    // First, sessions one at a time until one starts on a standby stripe of the client's pool (it fills
    // in the background): that stripe's OPEN reached some worker ahead of need, and its reply must name
    // the worker as an OPEN's does, or the session's JOINs would scatter.
    const early: ReturnType<typeof sessions>[] = [];
    const standby = /session \w+ start app .* standby/;
    while (!standby.test(c.text)) {
      if (early.length === 50) throw new Error(`no session started on a standby stripe:\n${c.text}`);
      const starts = c.text.split(" start app ").length;
      early.push(sessions(cport, 1, 900 + early.length));
      await until(() => c.text.split(" start app ").length > starts, "the session starts");
    }
    const s = sessions(cport, SESSIONS, 1000);
    const all = SESSIONS + early.length;
    const ws = await allHeld(f.metrics, all);
    expectStripesTogether(ws, all);
    // Every JOIN went to the join port the OPEN's reply named: no worker saw a stripe of another's session.
    for (const w of ws) expect(w.report!.wrongWorker).toBe(0);
    // Drain: the fleet stops taking sessions (503), the live ones on both workers finish exact.
    f.server.kill("SIGTERM");
    await until(() => f.server.text.includes("SIGTERM: draining"), "the primary drains");
    expect(await healthz(f.metrics)).toBe(503);
    f.release();
    for (const x of [...early, s]) {
      (await Promise.all(x.results)).forEach((r, i) => {
        expect(r.error).toBeUndefined();
        expect(r.cleanEnd).toBe(true);
        expect(sha256(r.received)).toBe(sha256(x.data[i]!));
      });
    }
    expect(await f.server.exited).toBe(0);
    expect(f.server.text).toMatch(/worker 0: .*stopped/);
    expect(f.server.text).toMatch(/worker 1: .*stopped/);
    for (const w of ws) expect(() => process.kill(w.pid, 0)).toThrow(); // no worker outlives the primary
  }, 180_000);

  test("4 workers: a worker killed with SIGKILL resets only its sessions, the others finish exact, it comes back", async () => {
    const f = await fleet(4);
    const c = client(`127.0.0.1:${f.port}`);
    const cport = await c.listeningPort("client");
    const s = sessions(cport, SESSIONS, 5000);
    const ws = await allHeld(f.metrics, SESSIONS);
    const owner = expectStripesTogether(ws, SESSIONS);
    const victim = ws.find((w) => w.report!.sessionCount > 0)!;
    const lost = [...owner.values()].filter((k) => k === victim.index).length;
    const from = f.server.text.length;
    process.kill(victim.pid, "SIGKILL");
    await f.server.waitFor(new RegExp(`worker ${victim.index} ready`), 30_000, from);
    f.release();
    const rs = await Promise.all(s.results);
    const exact = rs.filter((r, i) => r.error === undefined && r.cleanEnd && sha256(r.received) === sha256(s.data[i]!));
    const failed = rs.filter((r) => !(r.error === undefined && r.cleanEnd));
    // The killed worker's apps see a reset, never a clean EOF; everyone else's session is exact.
    expect(failed.length).toBe(lost);
    expect(exact.length).toBe(SESSIONS - lost);
    for (const r of failed) expect(r.error).toBeDefined();
    const after = await workers(f.metrics);
    const back = after[victim.index]!;
    expect(back.state).toBe("ready");
    expect(back.restarts).toBe(1);
    expect(back.pid).not.toBe(victim.pid);
    for (const w of after) if (w.index !== victim.index) expect(w.pid).toBe(ws[w.index]!.pid); // the others went on
    // New sessions work on the whole fleet again.
    const again = sessions(cport, 16, 9000);
    (await Promise.all(again.results)).forEach((r, i) => expect(sha256(r.received)).toBe(sha256(again.data[i]!)));
  }, 180_000);

  test("SIGHUP re-reads the key file in every worker before the primary says it reloaded", async () => {
    const dir = mkdtempSync(join(tmpdir(), "striper-workers-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const serverKeys = join(dir, "server.key");
    const clientKey = join(dir, "client.key");
    const fresh = randomBytes(32).toString("base64");
    writeFileSync(serverKeys, `${KEY}\n`, { mode: 0o600 });
    writeFileSync(clientKey, `${fresh}\n`, { mode: 0o600 });
    const f = await fleet(2, "127.0.0.1", ["--key-file", serverKeys]);
    f.release();
    appendFileSync(serverKeys, `${fresh}\n`);
    const from = f.server.text.length;
    f.server.kill("SIGHUP");
    await f.server.waitFor(/\d+Z SIGHUP: config reloaded/, 30_000, from);
    const reloadAt = f.server.text.slice(from).search(/\d+Z SIGHUP: config reloaded/);
    for (const k of [0, 1]) {
      const at = f.server.text.slice(from).search(new RegExp(`worker ${k}: keys now \\w+,\\w+`));
      expect(at).toBeGreaterThanOrEqual(0);
      expect(at).toBeLessThan(reloadAt);
    }
    // A client holding only the new key: its sessions open on either worker.
    const c = spawn(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${f.port}`, "--stripes", "2", "--key-file", clientKey]);
    const s = sessions(await c.listeningPort("client"), 8, 11_000);
    (await Promise.all(s.results)).forEach((r, i) => expect(sha256(r.received)).toBe(sha256(s.data[i]!)));
  }, 120_000);

  test("a primary killed with SIGKILL does not leave its workers running", async () => {
    const f = await fleet(2);
    const pids = (await workers(f.metrics)).map((w) => w.pid);
    expect(pids.length).toBe(2);
    f.server.kill("SIGKILL");
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await until(() => pids.every((p) => !alive(p)), () => `workers still running: ${pids.filter(alive).join(", ")}`, 30_000);
  }, 60_000);

  test("a client that cannot reach the join ports joins through the main address (wrong-worker answers), exact", async () => {
    // The client reaches the server only through a relay on 127.0.0.5; the join ports the reply names are
    // on 127.0.0.1, so the client's dial to 127.0.0.5:<join port> is refused — a firewall that rejects.
    const f = await fleet(2);
    const relay = spawn(["relay", "--listen", "127.0.0.5:0", "--target", `127.0.0.1:${f.port}`]);
    const rport = await relay.listeningPort("relay");
    const c = client(`127.0.0.5:${rport}`);
    const cport = await c.listeningPort("client");
    const n = 20;
    const s = sessions(cport, n, 7000);
    const ws = await allHeld(f.metrics, n);
    expectStripesTogether(ws, n);
    f.release();
    (await Promise.all(s.results)).forEach((r, i) => {
      expect(r.cleanEnd).toBe(true);
      expect(sha256(r.received)).toBe(sha256(s.data[i]!));
    });
    expect(c.text).toMatch(/join port \d+ unreachable \(\w+\): its stripes join through 127\.0\.0\.5:\d+/);
  }, 180_000);
});
