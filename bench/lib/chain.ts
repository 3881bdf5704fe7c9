/**
 * The process chain of one run: target, then link / relay / fault proxy / server / client as the spec
 * says, each a separate process started from the snapshot on ports from a free-port probe; then the
 * app; then measure and stop everything.
 *
 * The parts are separate so a scenario can change one: `planChain` (pure: which processes with which
 * argv) composes the `*Proc` builders, `Chain` starts and stops a plan and can add processes (external
 * programs too), `runTransfer` is the standard app-to-target transfer, `runOnce` retries a lost port
 * race and turns any other failure into a failed run.
 */

import { CLK_TCK, Child, StartError, allReady, cpuTicks, freePorts, peakRss, type Readiness } from "./proc.ts";
import { deliver, num, stripeDeaths } from "./measure.ts";
import type { Role, RunResult, RunSpec, TransferEvents } from "./types.ts";

/** Loopback host every process uses. */
export const LOOP = "127.0.0.1";
/** Seed of the test streams (bench/lib/data.ts). */
const SEED = 1;
/** The client and server log one of these per session; they carry the stripe deaths. */
const SESSION_END = /session \S+ end /;
/** Ports the probe hands each run; the standard chain uses the first four. */
const PORTS = 8;

/** One process to start: what, how it says it is ready, what to keep of its log. */
export interface ProcPlan {
  name: string;
  /** A Bun script and its arguments (paths relative to the snapshot), or with `exec` a program. */
  argv: string[];
  ready: Readiness;
  stdin?: boolean;
  keep?: RegExp;
  exec?: boolean;
}

/** The services of a run (started before the app) and the port the app connects to. */
export interface ChainPlan {
  procs: ProcPlan[];
  entry: number;
  /** Extra app arguments that depend on the ports (e.g. --socks 127.0.0.1:TARGET). */
  appArgs?: string[];
}

/** Builds the processes of a run from its spec and free ports (`ports.length` ≥ 8). Pure. */
export type Planner = (spec: RunSpec, ports: readonly number[]) => ChainPlan;

const addr = (port: number): string => `${LOOP}:${port}`;
const extra = (spec: RunSpec, role: Role): string[] => spec.args?.[role] ?? [];
const rateList = (spec: RunSpec): string => (spec.rates ?? [0]).map(String).join(",");

/** The target tool (sink, source or echo by direction) on `port`. */
export function targetProc(spec: RunSpec, port: number): ProcPlan {
  const argv = [spec.tools?.target ?? "bench/tools/target.ts", "--port", String(port), "--hash", spec.hash ? "1" : "0", "--seed", String(SEED)];
  if (spec.dir === "up") argv.push("--mode", "sink");
  else if (spec.dir === "echo") argv.push("--mode", "echo");
  else argv.push("--mode", "source", "--bytes", String(spec.bytes), "--deadline-ms", String(spec.deadlineMs));
  return { name: "target", argv: [...argv, ...extra(spec, "target")], ready: "json" };
}

/** The capped link (src/main.ts link) from `port` to `next`. */
export function linkProc(spec: RunSpec, port: number, next: string): ProcPlan {
  const argv = ["src/main.ts", "link", "--listen", addr(port), "--target", next, "--rate", rateList(spec), "--delay", String(spec.delayMs ?? 0)];
  return { name: "link", argv: [...argv, ...extra(spec, "link")], ready: /link listening on/ };
}

/** The plain relay (src/main.ts relay) from `port` to `next`. */
export function relayProc(spec: RunSpec, port: number, next: string): ProcPlan {
  const argv = ["src/main.ts", "relay", "--listen", addr(port), "--target", next];
  return { name: "relay", argv: [...argv, ...extra(spec, "relay")], ready: /relay listening on/ };
}

/** The fault proxy (bench/tools/fault-proxy.ts) from `port` to `next`; commands go to its stdin. */
export function faultProc(spec: RunSpec, port: number, next: string): ProcPlan {
  const argv = ["bench/tools/fault-proxy.ts", "--listen", addr(port), "--target", next, "--rate", rateList(spec), "--latency", String(spec.delayMs ?? 0)];
  return { name: "fault", argv: [...argv, ...extra(spec, "fault")], ready: "json", stdin: true };
}

/**
 * The key file every keyed pair uses, relative to where the children run (the snapshot writes it, mode
 * 600: lib/snapshot.ts). The pair is keyed unless a scenario passes `--no-auth` (or its own
 * `--key-file`) in RunSpec.args.
 */
export const BENCH_KEY_FILE = "bench.key";

/** `--key-file BENCH_KEY_FILE` unless the role's extra arguments choose the authentication themselves. */
function keyArgs(spec: RunSpec, role: "server" | "client"): string[] {
  const own = extra(spec, role);
  return own.includes("--no-auth") || own.includes("--key-file") ? [] : ["--key-file", BENCH_KEY_FILE];
}

/** The server proxy on `port`, connecting sessions to `next`. */
export function serverProc(spec: RunSpec, port: number, next: string): ProcPlan {
  const argv = ["src/main.ts", "server", "--listen", addr(port), "--target", next, ...keyArgs(spec, "server")];
  // One process, as the figures before `--workers` (issue 14) were measured: its CPU is this pid's, and
  // stripes routed through a link or fault proxy must not be told a worker's join port that bypasses it.
  if (!extra(spec, "server").includes("--workers")) argv.push("--workers", "1");
  return { name: "server", argv: [...argv, ...extra(spec, "server")], ready: /server listening on/, keep: SESSION_END };
}

/** The client proxy on `port`, striping to the server (or whatever is in front of it) at `peer`. */
export function clientProc(spec: RunSpec, port: number, peer: string): ProcPlan {
  const argv = ["src/main.ts", "client", "--listen", addr(port), "--peer", peer, "--stripes", String(spec.stripes ?? 4), ...keyArgs(spec, "client")];
  if (spec.scheduler) argv.push("--scheduler", spec.scheduler);
  return { name: "client", argv: [...argv, ...extra(spec, "client")], ready: /client listening on/, keep: SESSION_END };
}

/** The app tool: connects to `entry`, sends or receives, reports one "done" event. */
export function appProc(spec: RunSpec, entry: number): ProcPlan {
  const argv = [spec.tools?.app ?? "bench/tools/app.ts", "--port", String(entry), "--conns", String(spec.conns), "--hash", spec.hash ? "1" : "0"];
  argv.push("--seed", String(SEED), "--timeout-ms", String(spec.timeoutMs));
  if (spec.dir === "down") argv.push("--mode", "download");
  else argv.push("--mode", spec.dir === "up" ? "upload" : "echo", "--bytes", String(spec.bytes), "--deadline-ms", String(spec.deadlineMs));
  return { name: "app", argv: [...argv, ...extra(spec, "app")], ready: "json" };
}

/** The standard chain of `spec.path` and `spec.mid`. */
export const planChain: Planner = (spec, ports) => {
  const [pTarget, pMid, pServer, pClient] = ports as [number, number, number, number];
  const procs = [targetProc(spec, pTarget)];
  switch (spec.path) {
    case "direct":
      return { procs, entry: pTarget };
    case "link":
      return { procs: [...procs, linkProc(spec, pMid, addr(pTarget))], entry: pMid };
    case "relay":
      return { procs: [...procs, relayProc(spec, pMid, addr(pTarget))], entry: pMid };
    case "pair": {
      procs.push(serverProc(spec, pServer, addr(pTarget)));
      let peer = addr(pServer);
      if (spec.mid === "link") procs.push(linkProc(spec, pMid, peer));
      else if (spec.mid === "fault") procs.push(faultProc(spec, pMid, peer));
      if (spec.mid === "link" || spec.mid === "fault") peer = addr(pMid);
      procs.push(clientProc(spec, pClient, peer));
      return { procs, entry: pClient };
    }
    default: {
      const never: never = spec.path;
      throw new Error(`unknown path ${String(never)}`);
    }
  }
};

/** CPU ticks of some processes at one moment. */
export type CpuMark = Record<string, number | null>;

/** The running processes of one run; `stop()` ends them all. */
export class Chain {
  /** Every process started, in order (the app too). */
  readonly kids: Child[] = [];
  /** The services by name (not the app or processes added with `track: false`). */
  readonly byName: Record<string, Child> = {};

  private constructor(readonly entry: number) {}

  /** Starts the services of `plan` and waits until every one is ready (15 s for all). */
  static async start(plan: ChainPlan): Promise<Chain> {
    const c = new Chain(plan.entry);
    try {
      for (const p of plan.procs) c.spawn(p);
      await allReady(c.kids, 15_000);
      return c;
    } catch (err) {
      c.withLogs(err);
      await c.stop();
      throw err;
    }
  }

  /** Starts one more process; `service: false` keeps it out of `byName` (the app, a one-shot client). */
  spawn(p: ProcPlan, service = true): Child {
    const child = new Child(p.name, p.argv, p.ready, { stdin: p.stdin, keep: p.keep, exec: p.exec });
    this.kids.push(child);
    if (service) this.byName[p.name] = child;
    return child;
  }

  /** CPU ticks (utime + stime) of every service now. */
  cpuMark(): CpuMark {
    return Object.fromEntries(Object.entries(this.byName).map(([n, c]) => [n, cpuTicks(c.pid)]));
  }

  /** CPU seconds each service spent since `mark` (services gone since are left out). */
  cpuSince(mark: CpuMark): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [n, c] of Object.entries(this.byName)) {
      const t1 = cpuTicks(c.pid);
      const t0 = mark[n];
      if (t1 !== null && t0 !== null && t0 !== undefined) out[n] = (t1 - t0) / CLK_TCK;
    }
    return out;
  }

  /** The last lines of every process's log. */
  logs(): Record<string, string[]> {
    return Object.fromEntries(this.kids.map((k) => [k.name, k.tail.slice(-12)]));
  }

  /** Attaches the logs to an error, for the failed run's report. */
  withLogs(err: unknown): unknown {
    if (err && typeof err === "object") (err as { logs?: Record<string, string[]> }).logs = this.logs();
    return err;
  }

  /** SIGTERM to every process (SIGKILL after a grace period); resolves when all have exited. */
  async stop(): Promise<void> {
    await Promise.all(this.kids.map((k) => k.kill()));
  }
}

/** Resolves when `cond()` holds or after `ms`, whichever is first. */
export async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await Bun.sleep(20);
}

/** How a scenario adjusts the standard transfer. */
export interface TransferHooks {
  plan?: Planner;
  collect?(ev: TransferEvents): Record<string, number>;
}

/** The standard run: start the chain, run the app, account the transfer, stop. Throws on a broken run. */
export async function runTransfer(spec: RunSpec, run: number, hooks: TransferHooks = {}): Promise<RunResult> {
  const plan = (hooks.plan ?? planChain)(spec, freePorts(PORTS));
  const chain = await Chain.start(plan);
  try {
    const { byName } = chain;
    const cpu0 = chain.cpuMark();
    const appPlan = appProc(spec, chain.entry);
    const app = chain.spawn({ ...appPlan, argv: [...appPlan.argv, ...(plan.appArgs ?? [])] }, false);
    const fault = byName.fault;
    if (spec.resetEveryMs && !fault) throw new Error(`${spec.key}: resetEveryMs needs the fault proxy (mid: "fault")`);
    if (spec.resetEveryMs) fault!.send(`reset-every ${spec.resetEveryMs}`);

    const done = await app.waitEvent((e) => e.event === "done", spec.timeoutMs + 10_000, "the app finishing its transfer");
    const conns = (done.conns as Record<string, unknown>[] | undefined) ?? [];
    const timedOut = conns.find((c) => String(c.error ?? "").startsWith("timeout"));
    if (timedOut) throw new Error(`timed out after ${spec.timeoutMs / 1000} s (${String(timedOut.error)})`);
    const firstAppError = conns.find((c) => c.error !== null && c.error !== undefined)?.error;
    // One stream and it broke: say how (the target may never have seen a connection).
    if (firstAppError !== undefined && spec.conns === 1) throw new Error(`app: ${String(firstAppError)}`);
    const target = byName.target!;
    const targetConns = (): Record<string, unknown>[] => target.events.filter((e) => e.event === "conn");
    // The target reports each connection when it ends (sink: at EOF; source/echo: at close).
    await target
      .waitEvent(() => targetConns().length >= spec.conns, firstAppError === undefined ? 10_000 : 2000, "the target reporting every connection")
      .catch((err) => {
        if (firstAppError === undefined) throw err; // otherwise the app's errors tell the story below
      });
    let resets: number | undefined;
    if (spec.resetEveryMs) {
      const before = fault!.events.length;
      fault!.send("reset-stop");
      const st = await fault!.waitEvent((e) => e.event === "stats" && fault!.events.indexOf(e) >= before, 5000, "fault proxy stats");
      resets = num(st.resets);
    }
    // The client logs "session … end … stripe-deaths N" a moment after the streams end.
    const client = byName.client;
    if (client) await until(() => client.kept.length >= spec.conns, 3000);

    const spent = chain.cpuSince(cpu0);
    const chainCpu = num(done.cpuSeconds) + Object.values(spent).reduce((a, s) => a + s, 0);
    const cpu: Record<string, number> = {};
    const rss: Record<string, number> = {};
    for (const n of spec.measure ?? []) {
      if (n === "app") cpu.app = num(done.cpuSeconds);
      else if (spent[n] !== undefined) cpu[n] = spent[n]!;
    }
    for (const n of spec.measure ?? []) {
      const r = byName[n] ? peakRss(byName[n]!.pid) : null;
      if (r !== null) rss[n] = r;
    }

    const tc = targetConns();
    const d = deliver(spec, done, tc);
    const r: RunResult = {
      run,
      ok: true,
      bytes: d.bytes,
      seconds: d.seconds,
      rate: d.seconds > 0 ? d.bytes / d.seconds : 0,
      intact: d.intact,
      cpu,
      rss,
      coresBusy: d.seconds > 0 ? chainCpu / d.seconds : 0,
    };
    if (d.sessions) r.sessions = d.sessions;
    if (resets !== undefined) r.resets = resets;
    if (spec.path === "pair") r.stripeDeaths = client && client.kept.length >= spec.conns ? stripeDeaths(client.kept) : null;
    const figures = hooks.collect?.({ spec, done, targetConns: tc });
    if (figures) r.figures = figures;
    if (!d.intact) {
      r.error = d.firstError ? `stream broken: ${d.firstError}` : "data mismatch (hash or byte count)";
      r.logs = chain.logs();
    }
    return r;
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

/**
 * Runs a spec once with `attempt`; a start failure from a lost port race is retried (3 tries), any
 * other error becomes a failed run carrying the processes' last log lines.
 */
export async function runOnce(
  spec: RunSpec,
  run: number,
  attempt: (spec: RunSpec, run: number) => Promise<RunResult>,
  progress: (line: string) => void,
): Promise<RunResult> {
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
