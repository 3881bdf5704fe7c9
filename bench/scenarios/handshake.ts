/**
 * handshake: what a stripe handshake costs the server, and what connections that never authenticate
 * cost it in memory (issue 9).
 *
 * - joins: a keyed server and a target; bench/tools/handshaker.ts opens one session and then keeps 16
 *   JOINs of it in flight for T seconds (each: connect, a fresh first message with its own salt and join
 *   proof, the server's authenticated reply checked, close). Figure: authenticated handshakes per CPU
 *   second of the server process (what one server core takes), and per wall second on this machine.
 * - hold: a keyed server whose per-source limits let 2,000 connections in; the tool opens 1,000 that send
 *   20 bytes and never authenticate, holds them, and the server's resident set (VmRSS) is read while they
 *   wait, and before they came.
 */

import { BENCH_KEY_FILE, Chain, LOOP, serverProc, targetProc } from "../lib/chain.ts";
import { okRuns, plainFigure } from "../lib/figures.ts";
import { CLK_TCK, cpuTicks, freePorts, peakRss, rssNow } from "../lib/proc.ts";
import { MB, fmt, summarize } from "../lib/stats.ts";
import type { RunResult, RunSpec, Scenario } from "../lib/types.ts";

const KEYS = { joins: "handshake/joins", hold: "handshake/hold" } as const;
const CONCURRENCY = 16;
const HOLD = 1000;
/** The server's RSS with HOLD connections waiting must stay below this, MB (10^6 B), in the worst run. */
const HOLD_RSS_LIMIT_MB = 150;

const num = (x: unknown): number => (typeof x === "number" ? x : Number(x ?? NaN));

async function runSpec(spec: RunSpec, run: number, seconds: number): Promise<RunResult> {
  const ports = freePorts(8);
  const target = targetProc({ ...spec, dir: "up" }, ports[0]!);
  const server = serverProc(spec, ports[1]!, `${LOOP}:${ports[0]}`);
  const chain = await Chain.start({ procs: [target, server], entry: ports[1]! });
  try {
    const srv = chain.byName.server!;
    const tool = (args: string[]) =>
      chain.spawn({ name: "handshaker", argv: ["bench/tools/handshaker.ts", "--port", String(ports[1]), ...args], ready: "json" }, false);
    if (spec.key === KEYS.joins) {
      const t0 = cpuTicks(srv.pid);
      const t = tool(["--mode", "joins", "--key-file", BENCH_KEY_FILE, "--seconds", String(seconds), "--concurrency", String(CONCURRENCY)]);
      const done = await t.waitEvent((e) => e.event === "done", (seconds + 30) * 1000, "the handshakes");
      const t1 = cpuTicks(srv.pid);
      const cpu = t0 !== null && t1 !== null ? (t1 - t0) / CLK_TCK : NaN;
      const n = num(done.handshakes);
      const failures = num(done.failures);
      const wall = num(done.seconds);
      const r: RunResult = {
        run,
        ok: failures === 0 && n > 0,
        bytes: 0,
        seconds: wall,
        rate: 0,
        intact: true,
        cpu: { server: cpu },
        rss: {},
        figures: { handshakes: n, perServerCpuSecond: n / cpu, perWallSecond: n / wall, serverCoresBusy: cpu / wall },
      };
      if (!r.ok) r.error = `${failures} handshakes failed, ${n} succeeded`;
      return r;
    }
    const before = rssNow(srv.pid);
    const t = tool(["--mode", "hold", "--conns", String(HOLD), "--hold-ms", "3000"]);
    const holding = await t.waitEvent((e) => e.event === "holding", 30_000, `${HOLD} connections held`);
    await Bun.sleep(1000); // all of them read and waiting at the server
    const during = rssNow(srv.pid);
    const done = await t.waitEvent((e) => e.event === "done", 30_000, "the held connections released");
    const open = num(holding.open);
    const closedEarly = num(done.closedEarly);
    const bytesBack = num(done.bytesBack);
    const r: RunResult = {
      run,
      ok: open === HOLD && closedEarly === 0 && bytesBack === 0 && before !== null && during !== null,
      bytes: 0,
      seconds: 0,
      rate: 0,
      intact: true,
      cpu: {},
      rss: { server: peakRss(srv.pid) ?? 0 },
      figures: { rssIdleMB: (before ?? 0) / MB, rssHoldingMB: (during ?? 0) / MB, kbPerConn: ((during ?? 0) - (before ?? 0)) / 1024 / HOLD },
    };
    if (!r.ok) r.error = `${open}/${HOLD} held, ${closedEarly} closed early, ${bytesBack} bytes back`;
    return r;
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

export const handshake: Scenario = {
  name: "handshake",
  description: `authenticated stripe handshakes per server CPU second; server RSS with ${HOLD} connections that never authenticate`,
  reads: ["quick"],
  rateUnit: "MB/s",

  runs({ T }) {
        // deadlineMs: how long the JOINs go on (T: 4 s, 1 s with --quick).
    const base = { scenario: "handshake", dir: "up" as const, path: "pair" as const, mid: "none" as const, bytes: 0, conns: 1, hash: false, deadlineMs: T * 1000, timeoutMs: (T + 40) * 1000 };
    return [
      { ...base, key: KEYS.joins, label: `${CONCURRENCY} JOINs in flight`, measure: ["server"] },
      { ...base, key: KEYS.hold, label: `${HOLD} unauthenticated`, args: { server: ["--handshake-burst", "2000", "--handshake-rate", "2000"] } },
    ] satisfies RunSpec[];
  },

  run: (spec, run) => runSpec(spec, run, spec.deadlineMs / 1000),

  measures: ({ T }) =>
    `- handshake: bench/tools/handshaker.ts against a keyed server (its own process) with a target. joins: one session opened, then ${CONCURRENCY} JOINs of it kept in flight for ${T} s, each a new connection with a fresh first message whose reply is checked; handshakes per CPU second of the server (utime+stime, /proc) — what one server core takes — and per wall second with the tool on the same machine. hold: ${HOLD} connections each send 20 bytes of a first message and nothing more (server limits raised to let them all in), held 3 s; the server's VmRSS before and 1 s after they are all connected; none may get a byte back or be closed before the deadline.`,

  figures({ results }) {
    const fig = (key: string, name: string, unit: string, pick: (r: RunResult) => number | null | undefined, target?: Parameters<typeof plainFigure>[1]["target"], note = "") =>
      plainFigure(results, { scenario: "handshake", case: name, key, unit, pick, target, note });
    const busy = summarize(okRuns(results.get(KEYS.joins)).map((r) => r.figures?.serverCoresBusy)).median;
    return [
      fig(KEYS.joins, "authenticated stripe handshakes per server CPU second", "/s", (r) => r.figures?.perServerCpuSecond, undefined, busy === null ? "" : `server ${fmt(busy, 2)} cores busy`),
      fig(KEYS.joins, "the same per wall second (tool on the same cores)", "/s", (r) => r.figures?.perWallSecond),
      fig(KEYS.hold, "server RSS, idle", "MB", (r) => r.figures?.rssIdleMB),
      fig(KEYS.hold, `server RSS with ${HOLD} unauthenticated connections`, "MB", (r) => r.figures?.rssHoldingMB, {
        kind: "max",
        below: HOLD_RSS_LIMIT_MB,
        text: `< ${HOLD_RSS_LIMIT_MB} MB (worst run)`,
      }),
      fig(KEYS.hold, "memory per unauthenticated connection", "KB", (r) => r.figures?.kbPerConn),
    ];
  },
};
