/**
 * attacks: what a hostile key holder, or an unlucky user, costs the server proxy and the sessions beside
 * it (issue 10). Each run is its own chain of processes (target, server, client) plus
 * bench/tools/attacker.ts; the server is measured from /proc (CPU ticks, VmHWM, VmRSS).
 *
 * - baseline / fragments / ping / ack: an echo session through the pair (64 MiB each way) and a latency
 *   probe (one byte every 10 ms through the pair) run while the attacker, a key holder with its own
 *   session, sends 1-byte fragments at every other offset (up to 1M), PINGs for 3 s, or ACKs of 8,191
 *   entries for 3 s. Figures: the echo's time (against the baseline without an attacker), the probe's
 *   longest round trip (an event-loop stall of the server shows here), server CPU over the attack, peak
 *   RSS and RSS 2 s after, and whether and when the attacker was cut off.
 * - paused: a 64 MiB download alone, and beside 4 app connections that opened downloads and never read
 *   (a paused browser download). Figure: its time, and the ratio to alone.
 * - slots: 1,024 single-stripe OPENs by a key holder, which then vanish (RST). Figures: how long until a
 *   legitimate session is served, and how many lines the server logged for the flood.
 * - recvmem: 256 sessions that each fill their receive window with data that can never be delivered
 *   (all but the first byte). Figure: server RSS.
 * - fds: a server started under `prlimit --nofile=1024` and 1,500 idle connections held 6 s. Figures:
 *   whether the server is alive, whether a session opened during the flood and one after it are served,
 *   and the server's CPU while the connections are held.
 */

import { readFileSync, readdirSync } from "node:fs";
import { BENCH_KEY_FILE, Chain, LOOP, clientProc, serverProc, targetProc, type ProcPlan } from "../lib/chain.ts";
import { plainFigure } from "../lib/figures.ts";
import { CLK_TCK, Child, cpuTicks, freePorts, peakRss, rssNow } from "../lib/proc.ts";
import { MB, MiB } from "../lib/stats.ts";
import type { Figure, RunResult, RunSpec, Scenario } from "../lib/types.ts";

const ECHO_BYTES = 64 * MiB;
const DOWNLOAD = 64 * MiB;
const STALLED = 4;
const SLOTS = 1024;
const RECV_SESSIONS = 256;
const FD_LIMIT = 1024;
const FD_CONNS = 1500;

const KEYS = {
  baseline: "attacks/baseline",
  fragments: "attacks/fragments",
  ping: "attacks/ping",
  ack: "attacks/ack",
  pausedAlone: "attacks/paused-alone",
  paused: "attacks/paused",
  slots: "attacks/slots",
  recvmem: "attacks/recvmem",
  fds: "attacks/fds",
} as const;

const num = (x: unknown): number => (typeof x === "number" ? x : Number(x ?? NaN));
const addr = (p: number): string => `${LOOP}:${p}`;
const secondsOf = (ticks0: number | null, ticks1: number | null): number => (ticks0 !== null && ticks1 !== null ? (ticks1 - ticks0) / CLK_TCK : NaN);

/** An app tool run through the client: one connection; `extra` chooses the mode. */
function appPlan(port: number, extra: string[]): ProcPlan {
  return { name: "app", argv: ["bench/tools/app.ts", "--port", String(port), "--conns", "1", "--hash", "1", "--seed", "1", ...extra], ready: "json" };
}

function attackerPlan(name: string, args: string[]): ProcPlan {
  return { name, argv: ["bench/tools/attacker.ts", ...args], ready: "json" };
}

/** target (mode), server (args), client: started and ready. */
async function pair(spec: RunSpec, targetMode: "echo" | "source", ports: number[], server: Partial<ProcPlan> = {}): Promise<Chain> {
  const [pT, pS, pC] = ports as [number, number, number];
  const t = targetProc({ ...spec, dir: targetMode === "echo" ? "echo" : "down", bytes: DOWNLOAD, deadlineMs: 0 }, pT);
  const s = { ...serverProc(spec, pS, addr(pT)), ...server };
  const c = clientProc(spec, pC, addr(pS));
  return Chain.start({ procs: [t, s, c], entry: pC });
}

function result(run: number, figures: Record<string, number>, ok = true, error?: string): RunResult {
  const r: RunResult = { run, ok, bytes: 0, seconds: 0, rate: 0, intact: ok, cpu: {}, rss: {}, figures };
  if (error !== undefined) r.error = error;
  return r;
}

/** The echo session's seconds and whether it was intact, from the app's done event. */
function echoOutcome(done: Record<string, unknown>): { seconds: number; intact: boolean; error: string | null } {
  const c = ((done.conns as Record<string, unknown>[] | undefined) ?? [])[0] ?? {};
  const error = (c.error as string | null) ?? (c.intact === true ? null : `sent ${String(c.sent)}, received ${String(c.received)}, eof ${String(c.eof)}`);
  return { seconds: (num(done.tEnd) - num(done.t0)) / 1000, intact: c.intact === true, error };
}

async function concurrent(spec: RunSpec, run: number, attack: "none" | "fragments" | "ping" | "ack"): Promise<RunResult> {
  const ports = freePorts(8);
  const chain = await pair(spec, "echo", ports);
  try {
    const srv = chain.byName.server!.pid;
    const pC = ports[2]!;
    const probe = chain.spawn(attackerPlan("probe", ["--mode", "probe", "--port", String(pC), "--seconds", "6"]), false);
    await probe.ready;
    await Bun.sleep(300);
    const cpu0 = cpuTicks(srv);
    let attacker: Child | undefined;
    if (attack !== "none") {
      const args = ["--mode", attack, "--port", String(ports[1]), "--key-file", BENCH_KEY_FILE];
      if (attack === "fragments") args.push("--frames", "1000000");
      else args.push("--seconds", "3");
      attacker = chain.spawn(attackerPlan("attacker", args), false);
      await attacker.ready;
      await Bun.sleep(300); // the attacker's session is open and sending
    }
    const app = chain.spawn(appPlan(pC, ["--mode", "echo", "--bytes", String(ECHO_BYTES), "--timeout-ms", "60000"]), false);
    const done = await app.waitEvent((e) => e.event === "done", 70_000, "the echo session");
    const a = attacker ? await attacker.waitEvent((e) => e.event === "done", 60_000, "the attack") : undefined;
    const cpu1 = cpuTicks(srv);
    const p = await probe.waitEvent((e) => e.event === "done", 20_000, "the probe");
    const peak = peakRss(srv);
    await Bun.sleep(2000);
    const after = rssNow(srv);
    const echo = echoOutcome(done);
    const figures: Record<string, number> = {
      echoSeconds: echo.seconds,
      probeMaxMs: num(p.maxMs),
      probeP99Ms: num(p.p99Ms),
      probeBroken: p.error === null ? 0 : 1,
      serverCpu: secondsOf(cpu0, cpu1),
      peakRssMB: (peak ?? NaN) / MB,
      rssAfterMB: (after ?? NaN) / MB,
    };
    if (a) {
      figures.attackFrames = num(a.sent);
      figures.attackCut = a.closedHow === "open" ? 0 : 1;
      figures.attackCutAfterMs = a.closedAfterMs === null ? NaN : num(a.closedAfterMs);
    }
    const broken = !echo.intact || p.error !== null;
    return result(run, figures, !broken, broken ? `concurrent session broken: echo ${String(echo.error)}, probe ${String(p.error)}` : undefined);
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

async function paused(spec: RunSpec, run: number, stalled: number): Promise<RunResult> {
  const ports = freePorts(8);
  const chain = await pair(spec, "source", ports);
  try {
    const pC = ports[2]!;
    if (stalled > 0) {
      const st = chain.spawn(attackerPlan("stall", ["--mode", "stall", "--port", String(pC), "--conns", String(stalled)]), false);
      await st.waitEvent((e) => e.event === "stalled", 10_000, "the stalled downloads");
      await Bun.sleep(3000); // they fill their windows and the budget, and stop making progress
    }
    const app = chain.spawn(appPlan(pC, ["--mode", "download", "--timeout-ms", "30000"]), false);
    const done = await app.waitEvent((e) => e.event === "done", 40_000, "the download");
    const c = ((done.conns as Record<string, unknown>[] | undefined) ?? [])[0] ?? {};
    const received = num(c.received);
    const seconds = (num(c.tEnd) - num(done.t0)) / 1000;
    const target = chain.byName.target!;
    const tc = await target
      .waitEvent((e) => e.event === "conn" && num(e.bytesOut) === DOWNLOAD && e.shaOut === c.shaRecv, 5000, "the target's record of the download")
      .catch(() => undefined);
    const intact = c.error === null && c.eof === true && received === DOWNLOAD && tc !== undefined;
    return result(run, { seconds, receivedMB: received / MB }, intact, intact ? undefined : `download: ${String(c.error)} after ${received} bytes`);
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

async function slots(spec: RunSpec, run: number): Promise<RunResult> {
  const ports = freePorts(8);
  // Every line the server writes is kept, to count what the flood costs the log.
  const chain = await pair(spec, "echo", ports, { keep: /./ });
  try {
    const srv = chain.byName.server!;
    const linesBefore = srv.kept.length;
    const att = chain.spawn(attackerPlan("attacker", ["--mode", "slots", "--port", String(ports[1]), "--key-file", BENCH_KEY_FILE, "--count", String(SLOTS)]), false);
    const opened = await att.waitEvent((e) => e.event === "opened", 60_000, "the slot flood");
    await att.waitEvent((e) => e.event === "vanished", 10_000, "the flood vanishing");
    const t0 = performance.now();
    let served = NaN;
    let tries = 0;
    while (performance.now() - t0 < 20_000) {
      tries++;
      const app = chain.spawn(appPlan(ports[2]!, ["--mode", "echo", "--bytes", "65536", "--timeout-ms", "5000"]), false);
      const done = await app.waitEvent((e) => e.event === "done", 10_000, "a legitimate session");
      if (echoOutcome(done).intact) {
        served = performance.now() - t0;
        break;
      }
      await Bun.sleep(100);
    }
    await Bun.sleep(12_000); // the flood's sessions end (grace) and their lines (or summaries) are written
    const lines = srv.kept.length - linesBefore;
    return result(run, { opened: num(opened.ok), refused: num(opened.refused), servedAfterMs: served, tries, logLines: lines }, Number.isFinite(served), Number.isFinite(served) ? undefined : "no legitimate session served within 20 s");
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

async function recvmem(spec: RunSpec, run: number): Promise<RunResult> {
  const ports = freePorts(8);
  const chain = await pair(spec, "echo", ports);
  try {
    const srv = chain.byName.server!.pid;
    const before = rssNow(srv);
    const att = chain.spawn(
      attackerPlan("attacker", ["--mode", "recvmem", "--port", String(ports[1]), "--key-file", BENCH_KEY_FILE, "--sessions", String(RECV_SESSIONS)]),
      false,
    );
    const filled = await att.waitEvent((e) => e.event === "filled", 120_000, "the windows filled");
    await Bun.sleep(1000);
    const during = rssNow(srv);
    return result(run, {
      rssBeforeMB: (before ?? NaN) / MB,
      rssMB: (during ?? NaN) / MB,
      peakRssMB: (peakRss(srv) ?? NaN) / MB,
      heldMB: num(filled.bytes) / MB,
      sessions: num(filled.sessions),
      refused: num(filled.refused),
    });
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

/** Descriptors a process has open now. */
function descriptors(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

async function fds(spec: RunSpec, run: number): Promise<RunResult> {
  const ports = freePorts(8);
  const [pT, pS, pC] = ports as [number, number, number];
  const base = serverProc(spec, pS, addr(pT));
  // The server under a descriptor limit; its handshake limits opened so the flood reaches the descriptors.
  const server: Partial<ProcPlan> = {
    argv: ["prlimit", `--nofile=${FD_LIMIT}`, process.execPath, ...base.argv, "--handshake-burst", "5000", "--handshake-rate", "5000", "--max-unauthenticated", "5000"],
    exec: true,
  };
  const chain = await pair(spec, "echo", ports, server);
  try {
    const srv = chain.byName.server!;
    const hold = chain.spawn({ name: "hold", argv: ["bench/tools/handshaker.ts", "--port", String(pS), "--mode", "hold", "--conns", String(FD_CONNS), "--hold-ms", "6000"], ready: "json" }, false);
    const holding = await hold.waitEvent((e) => e.event === "holding", 60_000, "the idle connections");
    const cpu0 = cpuTicks(srv.pid);
    await Bun.sleep(1500);
    const fdsOpen = descriptors(srv.pid);
    const limit = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${srv.pid}/limits`, "utf8"))?.[1];
    const during = chain.spawn(appPlan(pC, ["--mode", "echo", "--bytes", String(MiB), "--timeout-ms", "8000"]), false);
    const d = echoOutcome(await during.waitEvent((e) => e.event === "done", 15_000, "a session during the flood"));
    const cpu1 = cpuTicks(srv.pid);
    await hold.waitEvent((e) => e.event === "done", 20_000, "the idle connections released");
    await Bun.sleep(1000);
    const alive = srv.exitCode === null;
    let after = { intact: false, seconds: NaN, error: "server gone" as string | null };
    if (alive) {
      const a = chain.spawn(appPlan(pC, ["--mode", "echo", "--bytes", String(MiB), "--timeout-ms", "15000"]), false);
      after = echoOutcome(await a.waitEvent((e) => e.event === "done", 20_000, "a session after the flood"));
    }
    return result(
      run,
      {
        alive: alive ? 1 : 0,
        nofile: Number(limit),
        fdsOpen,
        heldOpen: num(holding.open),
        refusedAtConnect: num(holding.refusedAtConnect ?? 0),
        exitCode: srv.exitCode ?? -1,
        duringServed: d.intact ? 1 : 0,
        afterServed: after.intact ? 1 : 0,
        serverCpuWhileHeld: secondsOf(cpu0, cpu1) / Math.max(0.001, d.seconds + 1.5),
      },
      alive && after.intact,
      alive ? (after.intact ? undefined : `session after the flood: ${String(after.error)}`) : `server exited with code ${srv.exitCode}: ${srv.tail.slice(-3).join(" | ")}`,
    );
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

export const attacks: Scenario = {
  name: "attacks",
  description: "hostile key holders and stalled apps against the server proxy: fragments, PING/ACK floods, paused downloads, slot floods, receive memory, descriptors",
  reads: [],
  rateUnit: "MB/s",

  runs() {
    const base = { scenario: "attacks", dir: "echo" as const, path: "pair" as const, mid: "none" as const, stripes: 4, bytes: 0, conns: 1, hash: true, deadlineMs: 0, timeoutMs: 120_000 };
    return [
      { ...base, key: KEYS.baseline, label: "echo + probe, no attack" },
      { ...base, key: KEYS.fragments, label: "fragment flood" },
      { ...base, key: KEYS.ping, label: "PING flood" },
      { ...base, key: KEYS.ack, label: "ACK flood (8191 entries)" },
      { ...base, key: KEYS.pausedAlone, label: "64 MiB download alone", dir: "down" as const },
      { ...base, key: KEYS.paused, label: `64 MiB download beside ${STALLED} paused`, dir: "down" as const },
      { ...base, key: KEYS.slots, label: `${SLOTS} OPENs that vanish`, args: { server: ["--max-sessions", String(SLOTS)] } },
      { ...base, key: KEYS.recvmem, label: `${RECV_SESSIONS} sessions fill their windows` },
      { ...base, key: KEYS.fds, label: `nofile ${FD_LIMIT}, ${FD_CONNS} idle connections` },
    ] satisfies RunSpec[];
  },

  run(spec, run) {
    switch (spec.key) {
      case KEYS.baseline:
        return concurrent(spec, run, "none");
      case KEYS.fragments:
        return concurrent(spec, run, "fragments");
      case KEYS.ping:
        return concurrent(spec, run, "ping");
      case KEYS.ack:
        return concurrent(spec, run, "ack");
      case KEYS.pausedAlone:
        return paused(spec, run, 0);
      case KEYS.paused:
        return paused(spec, run, STALLED);
      case KEYS.slots:
        return slots(spec, run);
      case KEYS.recvmem:
        return recvmem(spec, run);
      case KEYS.fds:
        return fds(spec, run);
      default:
        throw new Error(`unknown attacks run ${spec.key}`);
    }
  },

  measures: () =>
    "- attacks: bench/tools/attacker.ts against a keyed server (own process, with a client and an echo or source target). Concurrent cases: a 64 MiB echo session and a 10 ms latency probe through the pair while the attacker floods its own session; server CPU from /proc over the attack, VmHWM, VmRSS 2 s after. paused: a 64 MiB download alone and beside 4 app connections that never read. slots: time from the vanishing of 1,024 single-stripe sessions to the first legitimate session served; server log lines over the flood. recvmem: server VmRSS with 256 sessions whose windows hold undeliverable data. fds: server under prlimit --nofile=1024 with 1,500 idle connections.",

  figures({ results }) {
    const f = (key: string, name: string, unit: string, pick: (r: RunResult) => number | null | undefined, note = ""): Figure =>
      plainFigure(results, { scenario: "attacks", case: name, key, unit, pick, note });
    const g = (key: string, x: string) => (r: RunResult) => r.figures?.[x];
    const out: Figure[] = [];
    for (const [key, name] of [
      [KEYS.baseline, "no attack"],
      [KEYS.fragments, "fragments"],
      [KEYS.ping, "PING flood"],
      [KEYS.ack, "ACK flood"],
    ] as const) {
      out.push(f(key, `${name}: concurrent 64 MiB echo`, "s", g(key, "echoSeconds")));
      out.push(f(key, `${name}: probe's longest round trip`, "ms", g(key, "probeMaxMs")));
      out.push(f(key, `${name}: server CPU`, "s", g(key, "serverCpu")));
      out.push(f(key, `${name}: server peak RSS`, "MB", g(key, "peakRssMB")));
      out.push(f(key, `${name}: server RSS 2 s after`, "MB", g(key, "rssAfterMB")));
      if (key !== KEYS.baseline) out.push(f(key, `${name}: attacker cut off after`, "ms", g(key, "attackCutAfterMs")));
    }
    out.push(f(KEYS.pausedAlone, "64 MiB download alone", "s", g(KEYS.pausedAlone, "seconds")));
    out.push(f(KEYS.paused, `64 MiB download beside ${STALLED} paused downloads`, "s", g(KEYS.paused, "seconds")));
    out.push(f(KEYS.slots, "legitimate session served after the flood vanished", "ms", g(KEYS.slots, "servedAfterMs")));
    out.push(f(KEYS.slots, "server log lines for the flood", "", g(KEYS.slots, "logLines")));
    out.push(f(KEYS.recvmem, `server RSS, ${RECV_SESSIONS} sessions with full windows`, "MB", g(KEYS.recvmem, "rssMB")));
    out.push(f(KEYS.fds, "server alive after the descriptor flood", "", g(KEYS.fds, "alive")));
    out.push(f(KEYS.fds, "session served during the flood", "", g(KEYS.fds, "duringServed")));
    return out;
  },
};
