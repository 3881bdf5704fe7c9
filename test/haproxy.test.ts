/**
 * Several relays behind a real HAProxy (Debian's haproxy 2.6; .ci/run installs it), configured from
 * deploy/haproxy.cfg (only addresses, ports and check timings are changed): three server processes on
 * 127.0.0.2-4 behind one HAProxy on 127.0.0.1. Every session's stripes reach one backend; a drained
 * backend (its /healthz 503) gets no new sessions while its live ones finish; a killed backend takes
 * only its own sessions; and adding a fourth backend moves only its share of session ids (consistent
 * hashing, measured on the session-id hash itself with recording backends).
 */

import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "bun:test";
import { randomBytes } from "node:crypto";
import type { Socket } from "bun";
import { appExchange, randomData, sha256, startTarget, type AppResult } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { tool } from "./helpers/tools.ts";
import { cleanups, prng, until } from "./helpers/util.ts";
import { proxyHeaderParser } from "../src/proxy/proxyproto.ts";
import type { WorkerStatus } from "../src/proxy/primary.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const EXAMPLE = readFileSync(new URL("../deploy/haproxy.cfg", import.meta.url).pathname, "utf8");
const cleanup = cleanups();
const dir = mkdtempSync(join(tmpdir(), "striper-haproxy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KEY = randomBytes(32).toString("base64");
const STRIPES = 8;
const SIZE = 32 * 1024;

function spawn(cmd: string[]): Proc {
  return Proc.spawn(cmd, cleanup, { env: { ...process.env, STRIPER_KEY: KEY } as Record<string, string> });
}

/** A port the OS gives out now (HAProxy's config needs a number; nothing else binds 127.0.0.1 ports here by number). */
function freePort(host = "127.0.0.1"): number {
  const l = Bun.listen({ hostname: host, port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

interface Backend {
  name: string;
  id: number;
  host: string;
  port: number;
  /** Its operations port (health checks); undefined: no checks. */
  checkPort?: number;
}

let configNo = 0;
/**
 * deploy/haproxy.cfg with this test's addresses: the bind address, the server lines, checks every
 * 100 ms that take a server out (and back) after one result, and an admin socket to read server states.
 */
function haproxyConfig(bind: number, backends: Backend[]): { file: string; socket: string } {
  const socket = join(dir, `haproxy${configNo}.sock`);
  const servers = backends
    .map((b) => `    server ${b.name} ${b.host}:${b.port} id ${b.id}${b.checkPort === undefined ? " no-check" : ` port ${b.checkPort}`}`)
    .join("\n");
  let text = EXAMPLE.replace(/^\s*bind .*$/m, `    bind 127.0.0.1:${bind}`)
    .replace(/^global$/m, `global\n    stats socket ${socket} level admin`)
    .replace(/^(\s*maxconn) \d+/m, "$1 4000") // the test machine's descriptor limit may be low
    .replace(/^(\s*default-server check) port \d+ inter \S+ fall \d+ rise \d+/m, "$1 inter 100ms fall 1 rise 1")
    .replace(/^\s*log stdout .*$/m, "")
    .replace(/(^\s*server relay\d .*\n?)+/m, `${servers}\n`);
  // The example's shape is what is tested: every directive the issue names must still be there.
  for (const d of ["set-var(sess.sid) req.payload(0,16)", "balance hash var(sess.sid)", "hash-type consistent", "tcp-request content accept if { req.len ge 16 }", "http-check send meth GET uri /healthz", "send-proxy-v2"]) {
    expect(text).toContain(d);
  }
  const file = join(dir, `haproxy${configNo++}.cfg`);
  writeFileSync(file, text);
  return { file, socket };
}

async function startHaproxy(backends: Backend[]): Promise<{ port: number; socket: string; p: Proc }> {
  const port = freePort();
  const { file, socket } = haproxyConfig(port, backends);
  const bin = tool("haproxy", "haproxy");
  const check = Bun.spawnSync([bin, "-c", "-f", file]);
  expect(check.exitCode).toBe(0);
  const p = spawn([bin, "-db", "-f", file]);
  await until(() => existsSync(socket), () => `haproxy's admin socket exists; haproxy said:\n${p.text}`, 20_000);
  return { port, socket, p };
}

/** One command on HAProxy's admin socket; resolves with the answer. */
function admin(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    Bun.connect({
      unix: socket,
      socket: {
        open: (s) => void s.write(`${command}\n`),
        data: (_s, d) => void (out += d.toString()),
        close: () => resolve(out),
        error: (_s, e) => reject(e),
        connectError: (_s, e) => reject(e),
      },
    }).catch(reject);
  });
}

/** Each server's status in the backend "relays" (UP, DOWN, ...). */
async function serverStates(socket: string): Promise<Record<string, string>> {
  // The socket file exists a moment before HAProxy accepts on it: no answer yet reads as no server.
  const csv = (await admin(socket, "show stat").catch(() => "")).trim().split("\n");
  const head = csv[0]!.replace(/^# /, "").split(",");
  const [px, sv, st] = ["pxname", "svname", "status"].map((c) => head.indexOf(c));
  if (st! < 0) return {};
  const out: Record<string, string> = {};
  for (const line of csv.slice(1)) {
    const f = line.split(",");
    if (f[px!] === "relays" && f[sv!] !== "BACKEND") out[f[sv!]!] = f[st!]!;
  }
  return out;
}

interface Relay {
  name: string;
  host: string;
  port: number;
  metrics: number;
  p: Proc;
}

/** A relay as deploy/haproxy.cfg documents it: 2 workers, join ports not told, PROXY v2 from the balancer. */
async function startRelay(host: string, targetPort: number): Promise<Relay> {
  const p = spawn([
    process.execPath, MAIN, "server", "--listen", `${host}:0`, "--target", `127.0.0.1:${targetPort}`, "--workers", "2",
    "--advertise-join", "off", "--proxy-protocol-from", "127.0.0.1", "--metrics", `${host}:0`, "--drain-timeout", "60s",
  ]);
  const port = Number((await p.waitFor(/server listening on [\d.]+:(\d+) target \S+ with 2 workers/))[1]);
  const metrics = Number((await p.waitFor(/metrics on http:\/\/[\d.]+:(\d+)\//))[1]);
  return { name: host, host, port, metrics, p };
}

async function workers(r: Relay): Promise<WorkerStatus[]> {
  return (await (await fetch(`http://${r.host}:${r.metrics}/api/workers`)).json()) as WorkerStatus[];
}

/** Session id (12 hex) → relay name, for every whole session (8 stripes) the relays hold; checks none is split. */
async function placement(relays: Relay[]): Promise<Map<string, string>> {
  const at = new Map<string, string>();
  for (const r of relays) {
    for (const w of await workers(r)) {
      for (const s of w.report?.sessions ?? []) {
        expect(at.has(s.id)).toBe(false); // never on two relays, never on two workers
        if (s.stripes.length === STRIPES) at.set(s.id, r.name);
      }
    }
  }
  return at;
}

async function waitPlaced(relays: Relay[], count: number): Promise<Map<string, string>> {
  let at = new Map<string, string>();
  for (let i = 0; ; i++) {
    at = await placement(relays);
    if (at.size >= count) return at;
    if (i === 600) throw new Error(`${at.size} whole sessions placed of ${count}`);
    await Bun.sleep(100);
  }
}

function sessions(port: number, count: number, seed: number): { data: Uint8Array[]; results: Promise<AppResult>[] } {
  const data = Array.from({ length: count }, (_, i) => randomData(SIZE, seed + i));
  return { data, results: data.map((d) => appExchange(port, d, { timeoutMs: 120_000 })) };
}

const exact = (r: AppResult, d: Uint8Array) => r.error === undefined && r.cleanEnd && sha256(r.received) === sha256(d);

describe("behind HAProxy", () => {
  test("100 sessions of 8 stripes on 3 relays, each on one; a drained relay gets no new sessions and finishes its own", async () => {
    let release!: () => void;
    const t = startTarget({ mode: "echo", holdEnd: new Promise<void>((r) => (release = r)) });
    cleanup.push(() => t.stop());
    cleanup.push(() => release());
    const relays = await Promise.all(["127.0.0.2", "127.0.0.3", "127.0.0.4"].map((h) => startRelay(h, t.port)));
    const hp = await startHaproxy(relays.map((r, i) => ({ name: `relay${i + 1}`, id: i + 1, host: r.host, port: r.port, checkPort: r.metrics })));
    let states: Record<string, string> = {};
    for (let i = 0; Object.values(states).filter((s) => s === "UP").length < 3; i++) {
      if (i === 200) throw new Error(`haproxy servers not all UP: ${JSON.stringify(states)}\n${hp.p.text}\n${await hp.p.stdout.catch(() => "")}`);
      states = await serverStates(hp.socket);
      await Bun.sleep(50);
    }
    const client = spawn([process.execPath, MAIN, "client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${hp.port}`, "--stripes", String(STRIPES), "--grow-after", "0", "--grace", "3s"]);
    const cport = await client.listeningPort("client");

    // 100 sessions, held open: every session's 8 stripes on one relay (and on one of its workers).
    const first = sessions(cport, 100, 100);
    const placed = await waitPlaced(relays, 100);
    const share = (name: string, m: Map<string, string>) => [...m.values()].filter((v) => v === name).length;
    for (const r of relays) expect(share(r.name, placed)).toBeGreaterThan(0);
    // The clients' addresses came in PROXY v2 headers from the balancer, which the relays accepted.
    for (const r of relays) expect(r.p.text).toContain("PROXY protocol v2 headers required from 127.0.0.1");

    // Drain relay 1: /healthz 503, HAProxy takes it out; new sessions go to the others.
    const drained = relays[0]!;
    drained.p.kill("SIGTERM");
    await until(() => drained.p.text.includes("SIGTERM: draining"), "relay 1 drains");
    expect((await fetch(`http://${drained.host}:${drained.metrics}/healthz`)).status).toBe(503);
    for (let i = 0; (await serverStates(hp.socket)).relay1 === "UP"; i++) {
      if (i === 200) throw new Error("haproxy never took the drained relay out");
      await Bun.sleep(50);
    }
    const second = sessions(cport, 30, 300);
    const after = await waitPlaced(relays.slice(1), 100 - share(drained.name, placed) + 30);
    const secondIds = [...after.keys()].filter((id) => !placed.has(id));
    expect(secondIds.length).toBe(30);
    // Its live sessions finish exact.
    release();
    const r1 = await Promise.all(first.results);
    r1.forEach((r, i) => expect(exact(r, first.data[i]!)).toBe(true));
    (await Promise.all(second.results)).forEach((r, i) => expect(exact(r, second.data[i]!)).toBe(true));
    expect(await drained.p.exited).toBe(0);
  }, 240_000);

  test("a killed relay takes only its own sessions", async () => {
    let release!: () => void;
    const t = startTarget({ mode: "echo", holdEnd: new Promise<void>((r) => (release = r)) });
    cleanup.push(() => t.stop());
    cleanup.push(() => release());
    const relays = await Promise.all(["127.0.0.2", "127.0.0.3", "127.0.0.4"].map((h) => startRelay(h, t.port)));
    const hp = await startHaproxy(relays.map((r, i) => ({ name: `relay${i + 1}`, id: i + 1, host: r.host, port: r.port, checkPort: r.metrics })));
    for (let i = 0; Object.values(await serverStates(hp.socket)).filter((s) => s === "UP").length < 3; i++) {
      if (i === 200) throw new Error("haproxy servers not all UP");
      await Bun.sleep(50);
    }
    const client = spawn([process.execPath, MAIN, "client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${hp.port}`, "--stripes", String(STRIPES), "--grow-after", "0", "--grace", "3s"]);
    const cport = await client.listeningPort("client");
    const s = sessions(cport, 60, 600);
    const placed = await waitPlaced(relays, 60);
    const victim = relays.find((r) => [...placed.values()].includes(r.name))!;
    const lost = [...placed.values()].filter((v) => v === victim.name).length;
    // A machine dies: its primary and its workers, all at once.
    const pids = (await workers(victim)).map((w) => w.pid);
    victim.p.kill("SIGKILL");
    for (const pid of pids) process.kill(pid, "SIGKILL");
    release();
    const rs = await Promise.all(s.results);
    const ok = rs.filter((r, i) => exact(r, s.data[i]!)).length;
    const reset = rs.filter((r) => r.error !== undefined && !r.cleanEnd).length;
    expect(reset).toBe(lost); // its apps see a reset, never a clean EOF
    expect(ok).toBe(60 - lost);
  }, 240_000);

  test("adding a fourth backend moves only about a quarter of session ids, all of them to the new one", async () => {
    // Recording backends: each notes the session id (after the PROXY v2 header) of every connection.
    const seen = new Map<string, string>();
    const listeners = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"].map((host) =>
      Bun.listen<{ buf: Uint8Array }>({
        hostname: host,
        port: 0,
        socket: {
          open: (s) => void (s.data = { buf: new Uint8Array(0) }),
          data: (s: Socket<{ buf: Uint8Array }>, d) => {
            s.data.buf = Buffer.concat([s.data.buf, d]);
            const h = proxyHeaderParser()(s.data.buf);
            if (h.kind === "done" && s.data.buf.byteLength >= h.size + 16) {
              seen.set(Buffer.from(s.data.buf.subarray(h.size, h.size + 16)).toString("hex"), host);
              s.end();
            }
          },
        },
      }),
    );
    cleanup.push(() => listeners.forEach((l) => l.stop(true)));
    const backends: Backend[] = listeners.map((l, i) => ({ name: `relay${i + 1}`, id: i + 1, host: l.hostname, port: l.port }));
    const rand = prng(14);
    const ids = Array.from({ length: 400 }, () => Uint8Array.from({ length: 16 }, () => Math.floor(rand() * 256)));
    const route = async (count: number): Promise<Map<string, string>> => {
      seen.clear();
      const hp = await startHaproxy(backends.slice(0, count));
      for (let i = 0; i < ids.length; i += 50) {
        await Promise.all(
          ids.slice(i, i + 50).map(
            (id) =>
              new Promise<void>((resolve) => {
                void Bun.connect({
                  hostname: "127.0.0.1",
                  port: hp.port,
                  socket: { open: (s) => void s.write(Buffer.concat([id, new Uint8Array(48)])), data() {}, close: () => resolve(), error: () => resolve(), connectError: () => resolve() },
                });
              }),
          ),
        );
      }
      await until(() => seen.size === ids.length, () => `${seen.size} of ${ids.length} ids reached a backend`);
      hp.p.kill("SIGTERM");
      await hp.p.exited;
      return new Map(seen);
    };
    const three = await route(3);
    const four = await route(4);
    const moved = ids.map((b) => Buffer.from(b).toString("hex")).filter((id) => three.get(id) !== four.get(id));
    for (const id of moved) expect(four.get(id)).toBe("127.0.0.5"); // nothing moves between the old three
    console.log(`consistent hashing: ${moved.length} of ${ids.length} session ids moved to the fourth backend`);
    expect(moved.length).toBeGreaterThan(ids.length * 0.1);
    expect(moved.length).toBeLessThan(ids.length * 0.4);
  }, 120_000);
});
