#!/usr/bin/env bun
/**
 * End-to-end benchmark suite (`bun run bench`): every component a separate process on loopback —
 * target, capped link or fault proxy, server proxy, client proxy, app — on ports from a free-port probe.
 *
 *   bun run bench/e2e.ts [--quick] [--runs K] [--cap MBPS] [--delay MS] [--stripes 1,2,4,...]
 *                        [--scenario caps|uneven|nocap|sessions|faults]...
 *
 * Scenarios:
 *   caps      capped link (--cap per connection, --delay one way): one direct connection through the link,
 *             then the proxy pair with N stripes through it; upload and download; ideal N × cap.
 *   uneven    8 stripes over links of rates cap,cap,cap,cap/10 (in turn) and cap×7,cap/10, per scheduler.
 *   nocap     direct, relay, proxy pair N = 1, 4, 8; 1 GiB upload; GB/s and CPU s/GiB per proxy.
 *   sessions  100 concurrent sessions × 4 MiB each way through an echo target, 4 stripes each.
 *   faults    8 stripes through the fault proxy capped at --cap per connection, one stripe reset every
 *             300 ms, against the same run without resets.
 *
 * The code under test (src/, bench/tools, bench/lib) is copied to a temporary directory first and every
 * child runs from that copy, so edits to the working tree during a run cannot mix code versions.
 *
 * Throughput = payload bytes / (app starts connecting → last byte at the receiver). Each figure is the
 * median of --runs runs (default 3; --quick: 1 and short transfers). Progress goes to stderr; the
 * markdown table to stdout and bench/results/latest.md; raw runs to bench/results/latest.json; charts
 * to bench/results/caps.svg and nocap.svg (--quick writes quick.md, quick.json, quick-*.svg instead, so
 * a CI smoke never overwrites a full run's results). Exit code 1 if any run failed (timeout, crash, corrupt data);
 * missed performance targets are reported, not fatal.
 */

import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join as joinPath, relative, resolve } from "node:path";
import {
  CLK_TCK,
  Child,
  ROOT,
  StartError,
  allReady,
  cpuTicks,
  freePorts,
  killAll,
  killAllNow,
  liveCount,
  peakRss,
  runFrom,
} from "./lib/proc.ts";
import { GiB, MB, MiB, fmt, summarize, type Summary } from "./lib/stats.ts";
import { barsSvg, capsSvg } from "./lib/svg.ts";

// ---------------------------------------------------------------------------------------------------
// Options

const SCENARIOS = ["caps", "uneven", "nocap", "sessions", "faults"] as const;
type Scenario = (typeof SCENARIOS)[number];
const SCHEDULERS = ["rate", "until-congested", "round-robin"] as const;

interface Options {
  quick: boolean;
  runs: number;
  capMBps: number;
  delayMs: number;
  stripes: number[];
  scenarios: Scenario[];
}

const USAGE = `usage: bun run bench [--quick] [--runs K] [--cap MBPS] [--delay MS] [--stripes 1,2,4,...]
                 [--scenario caps|uneven|nocap|sessions|faults]... (repeatable or comma list)

  --quick      short CI smoke: 1 run per figure, ~1 s transfers, 128 MiB uncapped
  --runs K     runs per figure, median reported (default 3; 1 with --quick)
  --cap MBPS   per-connection cap of the link in MB/s = 10^6 B/s (default 4)
  --delay MS   one-way delay of the link in ms (default 10)
  --stripes L  stripe counts for the caps scenario (default 1,2,4,8,16)
  --scenario S run only these scenarios (default: all)`;

function usage(msg: string): never {
  process.stderr.write(`error: ${msg}\n\n${USAGE}\n`);
  process.exit(2);
}

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, runs: 0, capMBps: 4, delayMs: 10, stripes: [1, 2, 4, 8, 16], scenarios: [] };
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === "" || !Number.isFinite(n) || n < min || n > max) usage(`${flag} wants a number in [${min}, ${max}], got "${v ?? ""}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string | undefined => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
    switch (flag) {
      case "--help":
      case "-h":
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
      case "--quick":
        o.quick = true;
        break;
      case "--runs":
        o.runs = Math.round(num(flag, value(), 1, 50));
        break;
      case "--cap":
        o.capMBps = num(flag, value(), 0.01, 10_000);
        break;
      case "--delay":
        o.delayMs = num(flag, value(), 0, 5000);
        break;
      case "--stripes": {
        const v = value();
        const list = (v ?? "").split(",").map((s) => num(flag, s, 1, 64));
        if (list.some((n) => !Number.isInteger(n))) usage(`--stripes wants whole numbers, got "${v}"`);
        o.stripes = [...new Set(list)].sort((x, y) => x - y);
        break;
      }
      case "--scenario": {
        for (const s of (value() ?? "").split(",").filter(Boolean)) {
          if (!SCENARIOS.includes(s as Scenario)) usage(`--scenario: expected one of ${SCENARIOS.join(", ")}, got "${s}"`);
          if (!o.scenarios.includes(s as Scenario)) o.scenarios.push(s as Scenario);
        }
        break;
      }
      default:
        usage(`unknown argument "${a}"`);
    }
  }
  if (o.scenarios.length === 0) o.scenarios = [...SCENARIOS];
  else o.scenarios.sort((x, y) => SCENARIOS.indexOf(x) - SCENARIOS.indexOf(y));
  if (o.runs === 0) o.runs = o.quick ? 1 : 3;
  return o;
}

// ---------------------------------------------------------------------------------------------------
// One run: a chain of processes and one transfer

type Dir = "up" | "down" | "echo";

/** Everything that defines a run; the same spec is run --runs times. */
interface RunSpec {
  key: string;
  scenario: Scenario;
  label: string;
  dir: Dir;
  /** direct: app→target; link: app→link→target; relay: app→relay→target; pair: app→client→[mid]→server→target. */
  path: "direct" | "link" | "relay" | "pair";
  mid?: "link" | "fault" | "none";
  /** Per-connection caps in MB/s, assigned in turn (link or fault proxy). */
  rates?: number[];
  delayMs?: number;
  stripes?: number;
  scheduler?: string;
  /** Bytes per connection (each way for echo). */
  bytes: number;
  conns: number;
  hash: boolean;
  /** The sender stops early (then FIN) after this long: bounds runs that are far below ideal. 0 = never. */
  deadlineMs: number;
  /** The whole transfer must finish within this, else the run is killed and reported failed. */
  timeoutMs: number;
  resetEveryMs?: number;
  /** Process names whose CPU time and peak RSS are recorded. */
  measure?: string[];
}

/** What one run measured. */
interface RunResult {
  run: number;
  ok: boolean;
  error?: string;
  /** Payload bytes delivered (each way for echo). */
  bytes: number;
  seconds: number;
  /** bytes / seconds, B/s. */
  rate: number;
  /** Hashes (or, unhashed, byte counts) matched and every stream ended cleanly. */
  intact: boolean;
  sessions?: { total: number; intact: number };
  /** CPU seconds during the transfer, per measured process. */
  cpu: Record<string, number>;
  /** Peak RSS (VmHWM) in bytes, per measured process. */
  rss: Record<string, number>;
  resets?: number;
  /** Stripe deaths the client logged at session end (null: its log line did not come in time). */
  stripeDeaths?: number | null;
  /** CPU seconds of every process in the chain (app included) over the transfer / transfer seconds. */
  coresBusy?: number;
  /** Tails of the components' logs, kept for failed runs. */
  logs?: Record<string, string[]>;
}

const LOOP = "127.0.0.1";
const SEED = 1;

function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

type Ev = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === "number" ? v : 0);

async function attempt(spec: RunSpec, run: number): Promise<RunResult> {
  const kids: Child[] = [];
  const spawn = (...args: ConstructorParameters<typeof Child>): Child => {
    const c = new Child(...args);
    kids.push(c);
    return c;
  };
  const logs = (): Record<string, string[]> => Object.fromEntries(kids.map((k) => [k.name, k.tail.slice(-12)]));
  const SESSION_END = /session \S+ end /;
  try {
    const [pTarget, pMid, pServer, pClient] = freePorts(4);
    const targetAddr = `${LOOP}:${pTarget}`;
    const rates = (spec.rates ?? [0]).map(String).join(",");
    const targetArgs = ["bench/tools/target.ts", "--port", String(pTarget), "--hash", spec.hash ? "1" : "0", "--seed", String(SEED)];
    if (spec.dir === "up") targetArgs.push("--mode", "sink");
    else if (spec.dir === "echo") targetArgs.push("--mode", "echo");
    else targetArgs.push("--mode", "source", "--bytes", String(spec.bytes), "--deadline-ms", String(spec.deadlineMs));
    const target = spawn("target", targetArgs, "json");
    const byName: Record<string, Child> = { target };
    let entry = pTarget!;
    if (spec.path === "link") {
      byName.link = spawn("link", ["src/main.ts", "link", "--listen", `${LOOP}:${pMid}`, "--target", targetAddr, "--rate", rates, "--delay", String(spec.delayMs ?? 0)], /link listening on/);
      entry = pMid!;
    } else if (spec.path === "relay") {
      byName.relay = spawn("relay", ["src/main.ts", "relay", "--listen", `${LOOP}:${pMid}`, "--target", targetAddr], /relay listening on/);
      entry = pMid!;
    } else if (spec.path === "pair") {
      const serverAddr = `${LOOP}:${pServer}`;
      byName.server = spawn("server", ["src/main.ts", "server", "--listen", serverAddr, "--target", targetAddr], /server listening on/, { keep: SESSION_END });
      let peer = serverAddr;
      if (spec.mid === "link") {
        byName.link = spawn("link", ["src/main.ts", "link", "--listen", `${LOOP}:${pMid}`, "--target", serverAddr, "--rate", rates, "--delay", String(spec.delayMs ?? 0)], /link listening on/);
        peer = `${LOOP}:${pMid}`;
      } else if (spec.mid === "fault") {
        byName.fault = spawn("fault", ["bench/tools/fault-proxy.ts", "--listen", `${LOOP}:${pMid}`, "--target", serverAddr, "--rate", rates, "--latency", String(spec.delayMs ?? 0)], "json", { stdin: true });
        peer = `${LOOP}:${pMid}`;
      }
      const clientArgs = ["src/main.ts", "client", "--listen", `${LOOP}:${pClient}`, "--peer", peer, "--stripes", String(spec.stripes ?? 4)];
      if (spec.scheduler) clientArgs.push("--scheduler", spec.scheduler);
      byName.client = spawn("client", clientArgs, /client listening on/, { keep: SESSION_END });
      entry = pClient!;
    }
    await allReady(kids, 15_000);

    const measured = (spec.measure ?? []).filter((n) => byName[n]);
    const cpu0 = Object.fromEntries(Object.entries(byName).map(([n, c]) => [n, cpuTicks(c.pid)]));
    const appArgs = ["bench/tools/app.ts", "--port", String(entry), "--conns", String(spec.conns), "--hash", spec.hash ? "1" : "0", "--seed", String(SEED), "--timeout-ms", String(spec.timeoutMs)];
    if (spec.dir === "down") appArgs.push("--mode", "download");
    else appArgs.push("--mode", spec.dir === "up" ? "upload" : "echo", "--bytes", String(spec.bytes), "--deadline-ms", String(spec.deadlineMs));
    const app = spawn("app", appArgs, "json");
    if (spec.resetEveryMs) byName.fault!.send(`reset-every ${spec.resetEveryMs}`);

    const done = await app.waitEvent((e) => e.event === "done", spec.timeoutMs + 10_000, "the app finishing its transfer");
    const conns = (done.conns as Ev[]) ?? [];
    const timedOut = conns.find((c) => String(c.error ?? "").startsWith("timeout"));
    if (timedOut) throw new Error(`timed out after ${spec.timeoutMs / 1000} s (${String(timedOut.error)})`);
    const firstAppError = conns.find((c) => c.error !== null && c.error !== undefined)?.error;
    // One stream and it broke: say how (the target may never have seen a connection).
    if (firstAppError !== undefined && spec.conns === 1) throw new Error(`app: ${String(firstAppError)}`);
    const isConn = (e: Ev): boolean => e.event === "conn";
    const targetConns = (): Ev[] => target.events.filter(isConn);
    // The target reports each connection when it ends (sink: at EOF; source/echo: at close).
    await target
      .waitEvent(() => targetConns().length >= spec.conns, firstAppError === undefined ? 10_000 : 2000, "the target reporting every connection")
      .catch((err) => {
        if (firstAppError === undefined) throw err; // otherwise the app's errors tell the story below
      });
    let resets: number | undefined;
    if (spec.resetEveryMs) {
      const before = byName.fault!.events.length;
      byName.fault!.send("reset-stop");
      const st = await byName.fault!.waitEvent((e) => e.event === "stats" && byName.fault!.events.indexOf(e) >= before, 5000, "fault proxy stats");
      resets = num(st.resets);
    }
    // The client logs "session … end … stripe-deaths N" a moment after the streams end.
    const client = byName.client;
    if (client) await until(() => client.kept.length >= spec.conns, 3000);
    const cpu: Record<string, number> = {};
    const rss: Record<string, number> = {};
    let chainCpu = num(done.cpuSeconds);
    const spent: Record<string, number> = {};
    for (const [n, c] of Object.entries(byName)) {
      const t1 = cpuTicks(c.pid);
      if (t1 === null || cpu0[n] == null) continue;
      spent[n] = (t1 - cpu0[n]!) / CLK_TCK;
      chainCpu += spent[n]!;
    }
    for (const n of measured) if (spent[n] !== undefined) cpu[n] = spent[n]!;
    for (const n of measured) {
      const r = peakRss(byName[n]!.pid);
      if (r !== null) rss[n] = r;
    }

    const tc = targetConns();
    const appErrors = conns.map((c) => c.error).filter((e) => e !== null && e !== undefined).map(String);
    const targetErrors = tc.map((c) => c.error).filter((e) => e !== null && e !== undefined).map(String);
    const sorted = (xs: unknown[]): string => xs.map(String).sort().join(",");
    let bytes = 0;
    let seconds = 0;
    let intact = false;
    let sessions: RunResult["sessions"];
    const t0 = num(done.t0);
    if (spec.dir === "up") {
      bytes = tc.reduce((a, c) => a + num(c.bytesIn), 0);
      const sent = conns.reduce((a, c) => a + num(c.sent), 0);
      seconds = (Math.max(...tc.map((c) => num(c.tLast))) - t0) / 1000;
      intact =
        appErrors.length === 0 &&
        targetErrors.length === 0 &&
        tc.every((c) => c.eof === true) &&
        bytes === sent &&
        (!spec.hash || sorted(conns.map((c) => c.shaSent)) === sorted(tc.map((c) => c.shaIn)));
    } else if (spec.dir === "down") {
      bytes = conns.reduce((a, c) => a + num(c.received), 0);
      seconds = (Math.max(...conns.map((c) => num(c.tLast))) - t0) / 1000;
      intact =
        appErrors.length === 0 &&
        targetErrors.length === 0 &&
        conns.every((c) => c.eof === true) &&
        bytes === tc.reduce((a, c) => a + num(c.bytesOut), 0) &&
        (!spec.hash || sorted(conns.map((c) => c.shaRecv)) === sorted(tc.map((c) => c.shaOut)));
    } else {
      bytes = conns.reduce((a, c) => a + num(c.received), 0);
      seconds = (num(done.tEnd) - t0) / 1000;
      const good = conns.filter((c) => c.intact === true).length;
      sessions = { total: spec.conns, intact: good };
      intact = good === spec.conns && conns.length === spec.conns;
    }
    const deaths =
      client && client.kept.length >= spec.conns
        ? client.kept.reduce((a, l) => a + Number(/stripe-deaths (\d+)/.exec(l)?.[1] ?? 0), 0)
        : null;
    const firstError = appErrors[0] ?? targetErrors[0];
    const r: RunResult = {
      run,
      ok: true,
      bytes,
      seconds,
      rate: seconds > 0 ? bytes / seconds : 0,
      intact,
      cpu,
      rss,
      coresBusy: seconds > 0 ? chainCpu / seconds : 0,
    };
    if (sessions) r.sessions = sessions;
    if (resets !== undefined) r.resets = resets;
    if (spec.path === "pair") r.stripeDeaths = deaths;
    if (!intact) {
      r.error = firstError ? `stream broken: ${firstError}` : "data mismatch (hash or byte count)";
      r.logs = logs();
    }
    return r;
  } catch (err) {
    (err as { logs?: Record<string, string[]> }).logs = logs();
    throw err;
  } finally {
    await Promise.all(kids.map((k) => k.kill()));
  }
}

/** Resolves when `cond()` holds or after `ms`, whichever is first. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await Bun.sleep(20);
}

/** Runs a spec once; a start failure from a lost port race is retried, anything else is a failed run. */
async function runOnce(spec: RunSpec, run: number): Promise<RunResult> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt(spec, run);
    } catch (err) {
      if (err instanceof StartError && err.portClash && tries < 3) {
        progress(`  (port taken before a child could bind it; retrying with fresh ports)`);
        continue;
      }
      const e = err as Error & { logs?: Record<string, string[]> };
      return { run, ok: false, error: e.message, bytes: 0, seconds: 0, rate: 0, intact: false, cpu: {}, rss: {}, logs: e.logs };
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Scenarios

interface Ctx {
  o: Options;
  /** Target duration of a capped run, s. */
  T: number;
}

function capsSpecs({ o, T }: Ctx): RunSpec[] {
  const specs: RunSpec[] = [];
  const cap = o.capMBps;
  const bound = { deadlineMs: 2 * T * 1000, timeoutMs: (2 * T + 30) * 1000 };
  for (const dir of ["up", "down"] as const) {
    specs.push({
      key: `caps/${dir}/direct`,
      scenario: "caps",
      label: `direct ${dir}`,
      dir,
      path: "link",
      rates: [cap],
      delayMs: o.delayMs,
      bytes: Math.round(cap * MB * T),
      conns: 1,
      hash: true,
      ...bound,
    });
    for (const n of o.stripes) {
      specs.push({
        key: `caps/${dir}/N${n}`,
        scenario: "caps",
        label: `pair N=${n} ${dir}`,
        dir,
        path: "pair",
        mid: "link",
        rates: [cap],
        delayMs: o.delayMs,
        stripes: n,
        bytes: Math.round(n * cap * MB * T),
        conns: 1,
        hash: true,
        ...bound,
      });
    }
  }
  return specs;
}

/** Link rates of the two uneven cases, MB/s, assigned to connections in turn. */
function unevenRates(cap: number): { uneven: number[]; slow: number[] } {
  return { uneven: [cap, cap, cap, cap / 10], slow: [cap, cap, cap, cap, cap, cap, cap, cap / 10] };
}

/** Sum of the caps the first n connections get when `rates` are assigned in turn. */
function capSum(rates: number[], n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += rates[i % rates.length]!;
  return s;
}

function unevenSpecs({ o, T }: Ctx): RunSpec[] {
  const { uneven, slow } = unevenRates(o.capMBps);
  const specs: RunSpec[] = [];
  for (const sched of SCHEDULERS) {
    for (const [name, rates] of [["uneven", uneven], ["slow", slow]] as const) {
      specs.push({
        key: `uneven/${name}/${sched}`,
        scenario: "uneven",
        label: `${name} ${sched}`,
        dir: "up",
        path: "pair",
        mid: "link",
        rates: [...rates],
        delayMs: o.delayMs,
        stripes: 8,
        scheduler: sched,
        bytes: Math.round(capSum([...rates], 8) * MB * T),
        conns: 1,
        hash: true,
        // A scheduler that runs at N × the slowest cap would take ~8× longer: the sender stops at 2T,
        // and what it already handed over still has to drain.
        deadlineMs: 2 * T * 1000,
        timeoutMs: (2 * T + 40) * 1000,
      });
    }
  }
  return specs;
}

function nocapSpecs({ o }: Ctx): RunSpec[] {
  const bytes = o.quick ? 128 * MiB : GiB;
  const base = { scenario: "nocap" as const, dir: "up" as const, bytes, conns: 1, hash: false, deadlineMs: 30_000, timeoutMs: 60_000 };
  return [
    { ...base, key: "nocap/direct", label: "direct", path: "direct" },
    { ...base, key: "nocap/relay", label: "relay", path: "relay", measure: ["relay"] },
    ...[1, 4, 8].map((n) => ({ ...base, key: `nocap/N${n}`, label: `pair N=${n}`, path: "pair" as const, mid: "none" as const, stripes: n, measure: ["client", "server"] })),
  ];
}

const SESSIONS = 100;
const SESSION_BYTES = 4 * MiB;

function sessionsSpecs(_: Ctx): RunSpec[] {
  return [
    {
      key: "sessions/echo",
      scenario: "sessions",
      label: `${SESSIONS} sessions echo`,
      dir: "echo",
      path: "pair",
      mid: "none",
      stripes: 4,
      bytes: SESSION_BYTES,
      conns: SESSIONS,
      hash: true,
      deadlineMs: 0,
      timeoutMs: 120_000,
      measure: ["client", "server"],
    },
  ];
}

const FAULT_STRIPES = 8;
const RESET_EVERY_MS = 300;

function faultSpecs({ o, T }: Ctx): RunSpec[] {
  const base = {
    scenario: "faults" as const,
    dir: "up" as const,
    path: "pair" as const,
    mid: "fault" as const,
    rates: [o.capMBps],
    delayMs: o.delayMs,
    stripes: FAULT_STRIPES,
    bytes: Math.round(FAULT_STRIPES * o.capMBps * MB * Math.max(T, 2)),
    conns: 1,
    hash: true,
    deadlineMs: 2 * Math.max(T, 2) * 1000,
    timeoutMs: (2 * Math.max(T, 2) + 40) * 1000,
  };
  return [
    { ...base, key: "faults/clean", label: "clean" },
    { ...base, key: "faults/resets", label: `reset every ${RESET_EVERY_MS} ms`, resetEveryMs: RESET_EVERY_MS },
  ];
}

// ---------------------------------------------------------------------------------------------------
// Table

/** One line of the results table. */
interface Row {
  scenario: Scenario;
  case: string;
  unit: string;
  value: Summary;
  /** e.g. "3/3"; failed runs make the row fail. */
  runs: string;
  /** What the ratio is taken against, as text. */
  reference: string;
  ratio: number | null;
  /** e.g. "≥ 0.90"; empty when no target exists. */
  target: string;
  pass: boolean | null;
  note: string;
  /** Overrides the median cell (e.g. "300/300"). */
  text?: string;
}

type Results = Map<string, RunResult[]>;

function okRuns(rs: RunResult[] | undefined): RunResult[] {
  return (rs ?? []).filter((r) => r.ok && r.intact);
}

function runsCell(rs: RunResult[] | undefined): string {
  const all = rs ?? [];
  const good = okRuns(all).length;
  return good === all.length ? String(all.length) : `${good}/${all.length}`;
}

function failureNote(rs: RunResult[] | undefined): string {
  const bad = (rs ?? []).filter((r) => !(r.ok && r.intact));
  if (!bad.length) return "";
  const reasons = [...new Set(bad.map((r) => r.error ?? "failed"))];
  return `${bad.length} run(s) failed: ${reasons.join("; ")}`;
}

function scaled(rs: RunResult[] | undefined, pick: (r: RunResult) => number | null | undefined): Summary {
  return summarize(okRuns(rs).map(pick));
}

/** Short number for labels: 4, 0.4, 2.5. */
function short(x: number): string {
  return String(Number(x.toFixed(3)));
}

function join(...parts: string[]): string {
  return parts.filter(Boolean).join("; ");
}

/** A throughput row with an optional ratio against `ref` (same unit) and a minimum ratio `target`. */
function rateRow(
  scenario: Scenario,
  name: string,
  rs: RunResult[] | undefined,
  unit: "MB/s" | "GB/s",
  ref?: { label: string; value: number | null },
  target?: number,
  note = "",
): Row {
  const div = unit === "MB/s" ? MB : 1e9;
  const value = scaled(rs, (r) => r.rate / div);
  const ratio = ref?.value && value.median !== null ? value.median / ref.value : null;
  const failed = okRuns(rs).length !== (rs ?? []).length || (rs ?? []).length === 0;
  let pass: boolean | null = null;
  if (target !== undefined) pass = !failed && ratio !== null && ratio >= target;
  else if (failed) pass = false;
  return {
    scenario,
    case: name,
    unit,
    value,
    runs: runsCell(rs),
    reference: ref ? `${ref.label} ${fmt(ref.value)} ${unit}` : "",
    ratio,
    target: target !== undefined ? `≥ ${target.toFixed(2)}` : "",
    pass,
    note: join(note, failureNote(rs)),
  };
}

function buildRows(o: Options, res: Results): Row[] {
  const rows: Row[] = [];
  const cap = o.capMBps;
  const med = (key: string, div: number): number | null => scaled(res.get(key), (r) => r.rate / div).median;
  if (o.scenarios.includes("caps")) {
    for (const dir of ["up", "down"] as const) {
      const arrow = dir === "up" ? "upload" : "download";
      rows.push(rateRow("caps", `${arrow}: direct, 1 connection through the link`, res.get(`caps/${dir}/direct`), "MB/s", { label: "cap", value: cap }));
      for (const n of o.stripes) {
        rows.push(rateRow("caps", `${arrow}: pair, N=${n}`, res.get(`caps/${dir}/N${n}`), "MB/s", { label: "N×cap", value: n * cap }, 0.9));
      }
    }
  }
  if (o.scenarios.includes("uneven")) {
    const { uneven, slow } = unevenRates(cap);
    const sumU = capSum(uneven, 8);
    const minU = 8 * Math.min(...uneven);
    const others = capSum(slow, 7);
    for (const sched of SCHEDULERS) {
      const isDefault = sched === "rate";
      const u = rateRow(
        "uneven",
        `rates ${uneven.map(short).join(",")} ×2, N=8, ${sched}${isDefault ? " (default)" : ""}`,
        res.get(`uneven/uneven/${sched}`),
        "MB/s",
        { label: "sum", value: sumU },
        isDefault ? 0.8 : undefined,
      );
      const m = u.value.median;
      u.note = join(`N×smallest cap = ${fmt(minU)} MB/s${m !== null ? ` (${fmt(m / minU)}× that)` : ""}`, u.note);
      rows.push(u);
    }
    for (const sched of SCHEDULERS) {
      const isDefault = sched === "rate";
      rows.push(
        rateRow(
          "uneven",
          `one slow stripe (7×${short(cap)} + ${short(cap / 10)}), N=8, ${sched}${isDefault ? " (default)" : ""}`,
          res.get(`uneven/slow/${sched}`),
          "MB/s",
          { label: "sum of others", value: others },
          isDefault ? 0.9 : undefined,
          `all 8 caps: ${fmt(others + cap / 10)} MB/s`,
        ),
      );
    }
  }
  if (o.scenarios.includes("nocap")) {
    const direct = med("nocap/direct", 1e9);
    const relay = med("nocap/relay", 1e9);
    const ncpu = cpus().length;
    const busy = (key: string): string => {
      const b = scaled(res.get(key), (r) => r.coresBusy ?? null).median;
      return b === null ? "" : `${fmt(b, 1)} of ${ncpu} cores busy (all processes)`;
    };
    const mem = (key: string): string => {
      const c = scaled(res.get(key), (r) => (r.rss.client ?? 0) / MB).median;
      const sv = scaled(res.get(key), (r) => (r.rss.server ?? 0) / MB).median;
      return c && sv ? `peak RSS client ${fmt(c, 0)} MB, server ${fmt(sv, 0)} MB` : "";
    };
    rows.push(rateRow("nocap", "direct (app → target)", res.get("nocap/direct"), "GB/s", undefined, undefined, busy("nocap/direct")));
    rows.push(rateRow("nocap", "relay", res.get("nocap/relay"), "GB/s", { label: "direct", value: direct }, 0.8, busy("nocap/relay")));
    for (const n of [1, 4, 8]) {
      const key = `nocap/N${n}`;
      rows.push(rateRow("nocap", `pair, N=${n}`, res.get(key), "GB/s", { label: "relay", value: relay }, n === 4 ? 0.6 : undefined, join(busy(key), mem(key))));
    }
    const cpuRow = (name: string, key: string, proc: string): Row => {
      const rs = res.get(key);
      return {
        scenario: "nocap",
        case: name,
        unit: "CPU s/GiB",
        value: scaled(rs, (r) => (r.cpu[proc] !== undefined && r.bytes > 0 ? r.cpu[proc]! / (r.bytes / GiB) : null)),
        runs: runsCell(rs),
        reference: "",
        ratio: null,
        target: "",
        pass: null,
        note: "",
      };
    };
    rows.push(cpuRow("relay process CPU", "nocap/relay", "relay"));
    for (const n of [1, 4, 8]) {
      rows.push(cpuRow(`pair N=${n}: client proxy CPU`, `nocap/N${n}`, "client"));
      rows.push(cpuRow(`pair N=${n}: server proxy CPU`, `nocap/N${n}`, "server"));
    }
  }
  if (o.scenarios.includes("sessions")) {
    const rs = res.get("sessions/echo");
    const all = rs ?? [];
    const ok = okRuns(rs);
    const wall = scaled(rs, (r) => r.seconds);
    const agg = scaled(rs, (r) => r.rate / MB);
    rows.push({
      scenario: "sessions",
      case: `${SESSIONS} sessions × ${SESSION_BYTES / MiB} MiB each way, 4 stripes: wall time`,
      unit: "s",
      value: wall,
      runs: runsCell(rs),
      reference: "",
      ratio: null,
      target: "",
      pass: ok.length === all.length && all.length > 0 ? null : false,
      note: join(agg.median !== null ? `${fmt(agg.median)} MB/s each way in total` : "", failureNote(rs)),
    });
    const total = all.reduce((a, r) => a + (r.sessions?.total ?? SESSIONS), 0);
    const intact = all.reduce((a, r) => a + (r.sessions?.intact ?? 0), 0);
    rows.push({
      scenario: "sessions",
      case: "sessions intact (sha256 of echo = sent)",
      unit: "",
      value: { median: intact, min: null, max: null, n: all.length },
      text: `${intact}/${total}`,
      runs: runsCell(rs),
      reference: "",
      ratio: null,
      target: "all",
      pass: all.length > 0 && intact === total,
      note: "",
    });
    for (const proc of ["client", "server"]) {
      const v = scaled(rs, (r) => (r.rss[proc] !== undefined ? r.rss[proc]! / MB : null));
      rows.push({
        scenario: "sessions",
        case: `${proc} proxy peak RSS (VmHWM)`,
        unit: "MB",
        value: v,
        runs: runsCell(rs),
        reference: "",
        ratio: null,
        target: "< 200 MB (worst run)",
        pass: v.max === null ? false : v.max < 200,
        note: "",
      });
    }
  }
  if (o.scenarios.includes("faults")) {
    const clean = med("faults/clean", MB);
    const fr = res.get("faults/resets");
    rows.push(rateRow("faults", `${FAULT_STRIPES} stripes, no resets`, res.get("faults/clean"), "MB/s", { label: "N×cap", value: FAULT_STRIPES * cap }));
    const resets = scaled(fr, (r) => r.resets ?? null);
    const deaths = scaled(fr, (r) => r.stripeDeaths ?? null);
    rows.push(
      rateRow(
        "faults",
        `${FAULT_STRIPES} stripes, one reset every ${RESET_EVERY_MS} ms`,
        fr,
        "MB/s",
        { label: "clean", value: clean },
        0.7,
        join(
          resets.median !== null ? `${fmt(resets.median, 0)} resets per run (median)` : "",
          deaths.median !== null ? `${fmt(deaths.median, 0)} stripe deaths logged by the client` : "",
          okRuns(fr).length ? "hashes match" : "",
        ),
      ),
    );
  }
  return rows;
}

function valueCell(r: Row): string {
  if (r.text) return r.text;
  return r.value.median === null ? "failed" : `${fmt(r.value.median)} ${r.unit}`.trim();
}

function rangeCell(r: Row): string {
  if (r.text || r.value.min === null || r.value.max === null) return "";
  return `${fmt(r.value.min)}–${fmt(r.value.max)}`;
}

function markdownTable(rows: Row[]): string {
  const lines = [
    "| Scenario | Case | Median | Min–max | Runs | Reference | Ratio | Target | Result | Notes |",
    "|---|---|---:|---:|---:|---|---:|---|---|---|",
  ];
  for (const r of rows) {
    const result = r.pass === null ? "" : r.pass ? "pass" : "**FAIL**";
    lines.push(
      `| ${r.scenario} | ${r.case} | ${valueCell(r)} | ${rangeCell(r)} | ${r.runs} | ${r.reference} | ${r.ratio === null ? "" : r.ratio.toFixed(2)} | ${r.target} | ${result} | ${r.note.replace(/\|/g, "/")} |`,
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------
// Main

function git(args: string[]): string {
  try {
    const r = Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
    return r.stdout.toString().trim();
  } catch {
    return "";
  }
}

/** Paths copied into the snapshot the children run from. */
const SNAPSHOT_PATHS = ["src", "bench/tools", "bench/lib", "package.json", "tsconfig.json", "bunfig.toml"];
let snapshotDir: string | undefined;

/**
 * Copies the code under test into a temporary directory and runs every child from there, so edits to
 * the working tree during a run (other people's commits, half-written files) cannot mix versions
 * within one result set. Returns a SHA-256 over the copied src/ files (path + content) to identify it.
 */
function snapshot(): string {
  snapshotDir = mkdtempSync(joinPath(tmpdir(), "tcp-striper-e2e-"));
  for (const p of SNAPSHOT_PATHS) {
    const from = resolve(ROOT, p);
    if (existsSync(from)) cpSync(from, joinPath(snapshotDir, p), { recursive: true });
  }
  runFrom(snapshotDir);
  const h = new Bun.CryptoHasher("sha256");
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = joinPath(dir, e.name);
      if (e.isDirectory()) walk(full);
      else {
        h.update(relative(snapshotDir!, full));
        h.update(readFileSync(full));
      }
    }
  };
  walk(joinPath(snapshotDir, "src"));
  return h.digest("hex").slice(0, 12);
}

function removeSnapshot(): void {
  if (snapshotDir) rmSync(snapshotDir, { recursive: true, force: true });
  snapshotDir = undefined;
}

function writeAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function describeRun(spec: RunSpec, r: RunResult): string {
  if (!r.ok) return `FAILED: ${r.error}`;
  const rate = spec.scenario === "nocap" ? `${(r.rate / 1e9).toFixed(2)} GB/s` : `${(r.rate / MB).toFixed(2)} MB/s`;
  const parts = [rate, `${r.seconds.toFixed(2)} s`, r.intact ? (spec.hash ? "hash ok" : "bytes ok") : `BROKEN (${r.error})`];
  if (r.sessions) parts.push(`${r.sessions.intact}/${r.sessions.total} intact`);
  for (const [n, c] of Object.entries(r.cpu)) {
    parts.push(spec.scenario === "nocap" ? `${n} ${(c / (r.bytes / GiB)).toFixed(2)} CPU s/GiB` : `${n} ${c.toFixed(1)} CPU s`);
  }
  for (const [n, b] of Object.entries(r.rss)) parts.push(`${n} RSS ${(b / MB).toFixed(0)} MB`);
  if (r.resets !== undefined) parts.push(`${r.resets} resets`);
  if (r.stripeDeaths) parts.push(`${r.stripeDeaths} stripe deaths`);
  if (r.coresBusy !== undefined) parts.push(`${r.coresBusy.toFixed(1)} cores busy`);
  return parts.join(", ");
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const T = o.quick ? 1 : 4;
  const ctx: Ctx = { o, T };
  const started = performance.now();
  const startedAt = new Date();
  const build: Record<Scenario, (c: Ctx) => RunSpec[]> = {
    caps: capsSpecs,
    uneven: unevenSpecs,
    nocap: nocapSpecs,
    sessions: sessionsSpecs,
    faults: faultSpecs,
  };
  // What is measured: HEAD and the state of src/ at the moment of the snapshot.
  const commit = git(["rev-parse", "--short", "HEAD"]);
  const dirty = git(["status", "--porcelain", "--", "src"]) !== "";
  const srcHash = snapshot();
  const specs = o.scenarios.flatMap((s) => build[s](ctx));
  const results: Results = new Map(specs.map((s) => [s.key, []]));
  const scenarioMs = new Map<Scenario, number>();
  const total = specs.length * o.runs;
  const load0 = loadavg()[0]!;
  progress(
    `tcp-striper e2e: ${o.scenarios.join(", ")}; ${o.runs} run(s) per figure${o.quick ? " (quick)" : ""}; ` +
      `cap ${o.capMBps} MB/s per connection, ${o.delayMs} ms one-way delay; ${total} runs`,
  );
  progress(`code under test: commit ${commit || "?"}${dirty ? " + uncommitted changes in src/" : ""}, src/ ${srcHash}, copied to ${snapshotDir}`);
  let k = 0;
  // Runs go round-robin over the specs of a scenario (run 1 of each, then run 2 ...), so a burst of
  // other load on the shared machine spreads over figures instead of sinking one.
  for (const sc of o.scenarios) {
    const t = performance.now();
    const mine = specs.filter((s) => s.scenario === sc);
    for (let run = 1; run <= o.runs; run++) {
      for (const spec of mine) {
        k++;
        const head = `[${String(k).padStart(3)}/${total} ${duration(performance.now() - started).padStart(9)}] ${sc.padEnd(8)} ${spec.label.padEnd(26)} run ${run}/${o.runs}`;
        const r = await runOnce(spec, run);
        results.get(spec.key)!.push(r);
        progress(`${head}  ${describeRun(spec, r)}`);
        if (!r.ok || !r.intact) {
          for (const [name, lines] of Object.entries(r.logs ?? {})) {
            if (lines.length) progress(`      ${name}: ${lines.slice(-4).join("\n      " + " ".repeat(name.length + 2))}`);
          }
        }
      }
    }
    scenarioMs.set(sc, performance.now() - t);
    progress(`  ${sc} done in ${duration(scenarioMs.get(sc)!)}`);
  }
  const elapsed = performance.now() - started;
  const rows = buildRows(o, results);

  const meta = {
    date: startedAt.toISOString(),
    commit: commit || null,
    srcUncommittedChanges: dirty,
    srcSha256: srcHash,
    bun: Bun.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    loadavgStart: load0,
    loadavgEnd: loadavg()[0]!,
    options: o,
    transferSeconds: T,
    durationSeconds: Math.round(elapsed / 100) / 10,
    scenarioSeconds: Object.fromEntries([...scenarioMs].map(([s, ms]) => [s, Math.round(ms / 100) / 10])),
  };
  const head =
    `# tcp-striper end-to-end benchmark\n\n` +
    `${meta.date} · commit ${commit || "?"}${dirty ? " + uncommitted changes in src/" : ""} (src/ sha256 ${srcHash}…, run from a snapshot) · Bun ${Bun.version} · ` +
    `${meta.cpus} CPUs (load ${load0.toFixed(1)} → ${meta.loadavgEnd.toFixed(1)}) · ${o.runs} run(s) per figure` +
    `${o.runs > 1 ? " (median, min–max)" : ""}${o.quick ? " · --quick" : ""} · link cap ${o.capMBps} MB/s per connection, ` +
    `${o.delayMs} ms one-way · took ${duration(elapsed)}\n`;
  const scenarioNotes: Record<Scenario, string> = {
    caps: `- caps: one connection, sized for ~${T} s at the ideal rate (direct: cap × ${T} s; pair: N × cap × ${T} s); data hashed (SHA-256) at both ends.`,
    uneven: `- uneven: upload, 8 stripes, link rates assigned to connections in turn; sized for ~${T} s at the sum of the caps; the sender stops at ${2 * T} s (then FIN) so a scheduler stuck near N × the smallest cap still ends in bounded time; hashed. Targets apply to the default scheduler (rate); the others are shown for comparison.`,
    nocap: `- nocap: upload of ${o.quick ? "128 MiB" : "1 GiB"}, byte counts checked, not hashed (hashing costs more CPU than the proxies); CPU = utime+stime from /proc/PID/stat (CLK_TCK ${CLK_TCK}) over the transfer, per GiB. With ${cpus().length} cores, direct has 2 busy processes, relay 3, the pair 4.`,
    sessions: `- sessions: ${SESSIONS} concurrent connections through the pair (no link), each sends ${SESSION_BYTES / MiB} MiB to an echo target and compares the SHA-256 of what comes back; wall time from the first connect to the last close; RSS = VmHWM of each proxy (worst run checked).`,
    faults: `- faults: ${FAULT_STRIPES} stripes through the fault proxy (bench/tools/fault-proxy.ts) capped at ${o.capMBps} MB/s per connection with ${o.delayMs} ms one-way latency — uncapped, the surviving stripes absorb a lost one for free on loopback, so only the capped run measures what a reset costs; one random live stripe reset every ${RESET_EVERY_MS} ms from the app's start to the end of the transfer; hashed.`,
  };
  const notes = [
    "",
    "How each figure is measured:",
    "- Every component is its own process on loopback (target, link or fault proxy, server proxy, client proxy, app), started fresh for every run on ports from a free-port probe.",
    "- Throughput = payload bytes / (app starts connecting → last byte at the receiver). MB = 10^6 B, GB = 10^9 B, MiB/GiB = 2^20/2^30 B.",
    ...o.scenarios.map((s) => scenarioNotes[s]),
    "- Result: pass/FAIL against the target ratio where one exists; a run that timed out, crashed or delivered different bytes fails its row.",
    ...(o.quick
      ? ["- --quick is a smoke test: 1 run of ~1 s per figure, so connection set-up and rate probing weigh ~10% and the ratios are indicative only. Full results: `bun run bench` (bench/results/latest.md)."]
      : []),
  ].join("\n");
  const table = markdownTable(rows);
  const md = `${head}\n${table}\n${notes}\n`;

  const outDir = resolve(ROOT, "bench/results");
  mkdirSync(outDir, { recursive: true });
  // A --quick smoke (CI) must not overwrite the results of a full run.
  const base = o.quick ? "quick" : "latest";
  const svgName = (name: string): string => (o.quick ? `quick-${name}` : name);
  const written = [`${base}.md`, `${base}.json`];
  writeAtomic(resolve(outDir, `${base}.md`), md);
  writeAtomic(
    resolve(outDir, `${base}.json`),
    `${JSON.stringify({ meta, rows, runs: specs.map((s) => ({ spec: s, results: results.get(s.key) })) }, null, 2)}\n`,
  );
  const sub = `${meta.date.slice(0, 16).replace("T", " ")} · commit ${commit || "?"} · ${o.runs} run(s)${o.runs > 1 ? ", median" : ""}${o.quick ? " · quick" : ""}`;
  if (o.scenarios.includes("caps")) {
    const s = (key: string): Summary | undefined => {
      const v = scaled(results.get(key), (r) => r.rate / MB);
      return v.median === null ? undefined : v;
    };
    written.push(svgName("caps.svg"));
    writeAtomic(
      resolve(outDir, svgName("caps.svg")),
      capsSvg({
        title: `Striped throughput over a capped link (${o.capMBps} MB/s per connection, ${o.delayMs} ms one way)`,
        subtitle: sub,
        capMBps: o.capMBps,
        stripes: o.stripes,
        up: o.stripes.map((n) => s(`caps/up/N${n}`)),
        down: o.stripes.map((n) => s(`caps/down/N${n}`)),
        directUp: s("caps/up/direct"),
        directDown: s("caps/down/direct"),
      }),
    );
  }
  if (o.scenarios.includes("nocap")) {
    const g = (key: string): Summary => scaled(results.get(key), (r) => r.rate / 1e9);
    const cpu = (key: string, proc: string): string => {
      const v = scaled(results.get(key), (r) => (r.cpu[proc] !== undefined ? r.cpu[proc]! / (r.bytes / GiB) : null)).median;
      return v === null ? "" : `${proc} ${v.toFixed(2)}`;
    };
    written.push(svgName("nocap.svg"));
    writeAtomic(
      resolve(outDir, svgName("nocap.svg")),
      barsSvg(`Uncapped loopback upload, ${o.quick ? "128 MiB" : "1 GiB"}`, `${sub} · below: CPU s/GiB per proxy process`, "GB/s (10^9 B/s)", [
        { label: "direct", value: g("nocap/direct") },
        { label: "relay", value: g("nocap/relay"), note: cpu("nocap/relay", "relay") },
        ...[1, 4, 8].map((n) => ({
          label: `pair N=${n}`,
          value: g(`nocap/N${n}`),
          note: [cpu(`nocap/N${n}`, "client"), cpu(`nocap/N${n}`, "server")].filter(Boolean).join("\n"),
        })),
      ]),
    );
  }
  process.stdout.write(md);
  progress(`\nwrote ${written.map((f) => `bench/results/${f}`).join(", ")}; took ${duration(elapsed)}`);
  const failed = [...results.values()].flat().filter((r) => !r.ok || !r.intact).length;
  if (failed) progress(`${failed} run(s) failed (see the table and latest.json)`);
  if (liveCount() !== 0) progress(`warning: ${liveCount()} child process(es) still alive at the end; killing them`);
  await killAll(500);
  removeSnapshot();
  return failed ? 1 : 0;
}

// Cleanup on every way out: normal exit, Ctrl-C, termination, crash.
let stopping = false;
const onSignal = (sig: string, code: number) => (): void => {
  if (stopping) {
    killAllNow();
    process.exit(code);
  }
  stopping = true;
  progress(`\n${sig}: stopping all child processes`);
  void killAll(500).finally(() => {
    removeSnapshot();
    process.exit(code);
  });
};
process.on("SIGINT", onSignal("SIGINT", 130));
process.on("SIGTERM", onSignal("SIGTERM", 143));
process.on("SIGHUP", onSignal("SIGHUP", 129));
process.on("exit", () => {
  killAllNow();
  removeSnapshot();
});
process.on("uncaughtException", (err) => {
  progress(`fatal: ${err.stack ?? err}`);
  killAllNow();
  process.exit(1);
});
process.on("unhandledRejection", (err) => {
  progress(`fatal: unhandled rejection: ${(err as Error)?.stack ?? err}`);
  killAllNow();
  process.exit(1);
});

main().then(
  (code) => process.exit(code),
  (err) => {
    progress(`fatal: ${(err as Error).stack ?? err}`);
    killAllNow();
    process.exit(1);
  },
);
