/**
 * The primary process of `server --workers N` (src/proxy/workers.ts has the workers' side and what both
 * share): it starts the workers (worker 0 first, so that a listen port of 0 is fixed by the first bind and
 * shared by the others), restarts one that dies with backoff, forwards SIGHUP and SIGUSR1, drains them
 * all on SIGTERM/SIGINT, and adds up their reports for the operations endpoint (src/ops/fleet.ts).
 */

import type { Subprocess } from "bun";
import { StriperError } from "../errors.ts";
import type { CounterSnapshot, SessionSnapshot, StatsSource } from "../ops/stats.ts";
import { mergeHistograms } from "../ops/stats.ts";
import type { Address } from "../pipe/tcp.ts";
import type { LogSink } from "./log.ts";
import { MAX_WORKERS } from "./join.ts";
import { WORKER_ENV, REPORT_TIMEOUT_MS, RELOAD_TIMEOUT_MS, QUICK_EXIT_MS, type WorkerSpec, type WorkerReport, type FromWorker, type ToWorker, restartDelayMs, workerCommand } from "./workers.ts";

// --- Primary ------------------------------------------------------------------------------------------

/** The signals the primary passes on. */
export type ForwardedSignal = "SIGTERM" | "SIGHUP" | "SIGUSR1";

/** Where a worker is in its life. */
export type WorkerState = "starting" | "ready" | "exited";

/** What /api/workers shows of one worker. */
export interface WorkerStatus {
  index: number;
  pid: number;
  state: WorkerState;
  restarts: number;
  /** Sessions it reported last. */
  live: number;
  report?: WorkerReport;
  /** Why the report is missing (not ready, no answer in time). */
  reportError?: string;
}

/** Options of a Fleet. */
export interface FleetOptions {
  workers: number;
  /** The command line that starts a worker (workerCommand). */
  command: string[];
  /** Per listener: the address to share and each worker's join port. */
  listeners: readonly { listen: Address; joinPorts: number[] }[];
  log: LogSink;
  /** Extra environment for the workers (tests). */
  env?: Record<string, string>;
}

interface Slot {
  index: number;
  proc: Subprocess | undefined;
  state: WorkerState;
  startedAt: number;
  restarts: number;
  /** Quick exits in a row (restart backoff). */
  quick: number;
  live: number;
  joinPorts: number[];
  /** Signals that arrived while it was starting: delivered once it is ready (bounded). */
  held: ForwardedSignal[];
  /** Outstanding report requests by id. */
  waiting: Map<number, (r: WorkerReport | Error) => void>;
  /** Outstanding reloads by id. */
  reloads: Map<number, () => void>;
  restartTimer: ReturnType<typeof setTimeout> | undefined;
  ready: (() => void) | undefined;
  failed: ((err: StriperError) => void) | undefined;
}

const MAX_HELD_SIGNALS = 4;

/** The primary's view of its workers: starts, restarts, forwards signals, collects reports. */
export class Fleet {
  private readonly slots: Slot[];
  /** The shared main port of each listener, fixed once worker 0 has bound it. */
  private ports: number[];
  private stopping = false;
  private nextReport = 1;
  /** Counters of workers that have exited, summed, so the fleet's totals never go down. */
  private retired: Partial<CounterSnapshot> = {};
  private exitWaiters: (() => void)[] = [];

  constructor(private readonly opts: FleetOptions) {
    if (!(opts.workers >= 1 && opts.workers <= MAX_WORKERS)) throw new StriperError("E_CONFIG", `workers must be 1-${MAX_WORKERS}, got ${opts.workers}`);
    this.ports = opts.listeners.map((l) => l.listen.port);
    this.slots = Array.from({ length: opts.workers }, (_, index) => ({
      index,
      proc: undefined,
      state: "exited" as WorkerState,
      startedAt: 0,
      restarts: 0,
      quick: 0,
      live: 0,
      joinPorts: opts.listeners.map((l) => l.joinPorts[index]!),
      held: [],
      waiting: new Map(),
      reloads: new Map(),
      restartTimer: undefined,
      ready: undefined,
      failed: undefined,
    }));
  }

  /** The listen ports as bound (after start). */
  get listenPorts(): readonly number[] {
    return this.ports;
  }

  /** Workers ready now. */
  get ready(): number {
    return this.slots.filter((s) => s.state === "ready").length;
  }

  /** Sessions the workers reported last, together. */
  get liveSessions(): number {
    return this.slots.reduce((t, s) => t + (s.state === "exited" ? 0 : s.live), 0);
  }

  /** Process ids of the running workers. */
  get pids(): number[] {
    return this.slots.filter((s) => s.proc !== undefined && s.state !== "exited").map((s) => s.proc!.pid);
  }

  /**
   * Starts every worker: worker 0 first (it fixes a listen port of 0), then the rest. Resolves when all
   * are ready; rejects (StriperError E_WORKER) if one exits before it is, after stopping the others.
   */
  async start(): Promise<void> {
    try {
      await this.launch(this.slots[0]!);
      await Promise.all(this.slots.slice(1).map((s) => this.launch(s)));
    } catch (err) {
      this.kill();
      throw err;
    }
  }

  /** Passes a signal to every worker (held for one still starting). */
  signal(sig: ForwardedSignal): void {
    for (const s of this.slots) {
      if (s.proc === undefined || s.state === "exited") continue;
      if (s.state === "ready") s.proc.kill(sig);
      else if (sig === "SIGTERM") s.proc.kill("SIGKILL"); // it has no session yet, and may not handle signals yet
      else if (s.held.length < MAX_HELD_SIGNALS) s.held.push(sig);
    }
  }

  /** Drain: no more restarts, SIGTERM to every worker; resolves once all have exited. */
  drain(): Promise<void> {
    this.stopping = true;
    for (const s of this.slots) clearTimeout(s.restartTimer);
    this.signal("SIGTERM");
    return this.allExited();
  }

  /**
   * Stop now: workers still draining get a second SIGTERM, which makes them reset what is left and exit.
   * Resolves once all have exited (SIGKILL after `graceMs`).
   */
  stop(graceMs = 3000): Promise<void> {
    this.stopping = true;
    for (const s of this.slots) clearTimeout(s.restartTimer);
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.kill(), graceMs);
    return this.allExited().finally(() => clearTimeout(timer));
  }

  /** SIGKILL to every worker (start failed, or stop's grace ran out). */
  kill(): void {
    this.stopping = true;
    for (const s of this.slots) {
      clearTimeout(s.restartTimer);
      if (s.proc !== undefined && s.state !== "exited") s.proc.kill("SIGKILL");
    }
  }

  /** Resolves when no worker runs. */
  allExited(): Promise<void> {
    if (this.slots.every((s) => s.state === "exited")) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** Each worker's status, with its report where it answered within REPORT_TIMEOUT_MS. */
  async statuses(): Promise<WorkerStatus[]> {
    return Promise.all(
      this.slots.map(async (s): Promise<WorkerStatus> => {
        const base = { index: s.index, pid: s.proc?.pid ?? 0, state: s.state, restarts: s.restarts, live: s.live };
        if (s.state !== "ready") return { ...base, reportError: `worker ${s.state}` };
        const r = await this.report(s);
        return r instanceof Error ? { ...base, reportError: r.message } : { ...base, live: r.sessionCount, report: r };
      }),
    );
  }

  /**
   * Asks every ready worker to re-read its config and keys (what SIGHUP does to one process), and
   * resolves when all have done so, or exited, or RELOAD_TIMEOUT_MS passed.
   */
  reload(): Promise<void> {
    const all = this.slots
      .filter((s) => s.state === "ready")
      .map(
        (s) =>
          new Promise<void>((resolve) => {
            const id = this.nextReport++;
            const timer = setTimeout(() => finish(), RELOAD_TIMEOUT_MS);
            const finish = (): void => {
              clearTimeout(timer);
              s.reloads.delete(id);
              resolve();
            };
            s.reloads.set(id, finish);
            try {
              s.proc!.send({ kind: "reload", id } satisfies ToWorker);
            } catch {
              finish();
            }
          }),
      );
    return Promise.all(all).then(() => undefined);
  }

  /** Counters of the workers that have exited, summed (part of the fleet's totals). */
  get retiredCounters(): Partial<CounterSnapshot> {
    return this.retired;
  }

  private report(s: Slot): Promise<WorkerReport | Error> {
    return new Promise((resolve) => {
      const id = this.nextReport++;
      const timer = setTimeout(() => {
        s.waiting.delete(id);
        resolve(new Error(`worker ${s.index} did not report within ${REPORT_TIMEOUT_MS} ms`));
      }, REPORT_TIMEOUT_MS);
      s.waiting.set(id, (r) => {
        clearTimeout(timer);
        s.waiting.delete(id);
        resolve(r);
      });
      try {
        s.proc!.send({ kind: "report", id } satisfies ToWorker);
      } catch (err) {
        s.waiting.get(id)?.(new Error(`worker ${s.index}: ${String(err)}`));
      }
    });
  }

  /** Spawns the worker of `s`; resolves when it is ready, rejects if it exits first. */
  private launch(s: Slot): Promise<void> {
    const spec: WorkerSpec = { index: s.index, workers: this.opts.workers, ports: this.ports, joinPorts: s.joinPorts };
    s.state = "starting";
    s.startedAt = performance.now();
    s.live = 0;
    const done = new Promise<void>((resolve, reject) => {
      s.ready = resolve;
      s.failed = reject;
    });
    let proc: Subprocess;
    try {
      proc = Bun.spawn(this.opts.command, {
      stdin: "ignore",
      stdout: "inherit",
      stderr: "inherit",
      env: { ...process.env, ...this.opts.env, [WORKER_ENV]: JSON.stringify(spec) },
      serialization: "json",
      ipc: (msg: FromWorker) => this.onMessage(s, msg),
      });
    } catch (err) {
      s.state = "exited";
      return Promise.reject(new StriperError("E_WORKER", `cannot start worker ${s.index}: ${String(err)}`));
    }
    s.proc = proc;
    void proc.exited.then(() => this.onExit(s, proc));
    return done;
  }

  private onMessage(s: Slot, msg: FromWorker): void {
    switch (msg?.kind) {
      case "ready": {
        if (s.state !== "starting") return;
        s.state = "ready";
        if (s.index === 0) this.ports = msg.ports;
        const held = s.held.splice(0);
        for (const sig of held) s.proc?.kill(sig);
        this.opts.log(`worker ${s.index} ready (pid ${s.proc?.pid}) port ${msg.ports.join(",")} join ${msg.joinPorts.join(",")}`);
        s.quick = 0;
        s.ready?.();
        return;
      }
      case "sessions":
        if (Number.isInteger(msg.live) && msg.live >= 0) s.live = msg.live;
        return;
      case "report":
        s.waiting.get(msg.id)?.(msg.report);
        return;
      case "reloaded":
        s.reloads.get(msg.id)?.();
        return;
      default:
        this.opts.log(`worker ${s.index}: unknown message ignored`);
    }
  }

  private onExit(s: Slot, proc: Subprocess): void {
    if (s.proc !== proc) return;
    const wasReady = s.state === "ready";
    s.state = "exited";
    for (const w of [...s.waiting.values()]) w(new Error(`worker ${s.index} exited`));
    for (const r of [...s.reloads.values()]) r();
    const how = proc.signalCode ? `by ${proc.signalCode}` : `with status ${proc.exitCode}`;
    const ran = performance.now() - s.startedAt;
    if (this.exitWaiters.length > 0 && this.slots.every((x) => x.state === "exited")) for (const w of this.exitWaiters.splice(0)) w();
    if (!wasReady && s.failed !== undefined && s.restarts === 0) {
      // The first start failed (its own fatal line says why): the fleet cannot start.
      const fail = s.failed;
      s.failed = undefined;
      fail(new StriperError("E_WORKER", `worker ${s.index} exited ${how} before it was ready`));
      return;
    }
    if (this.stopping) return;
    s.quick = ran < QUICK_EXIT_MS ? s.quick + 1 : 0;
    const delay = restartDelayMs(s.quick);
    this.opts.log(`worker ${s.index} (pid ${proc.pid}) exited ${how} after ${(ran / 1000).toFixed(1)} s; its sessions are lost; restarting${delay > 0 ? ` in ${delay} ms` : ""}`);
    s.restartTimer = setTimeout(() => {
      s.restartTimer = undefined;
      if (this.stopping) return;
      s.restarts++;
      this.launch(s).catch(() => {}); // a failed restart is an exit like any other: onExit schedules the next
    }, delay);
  }

  /** Adds the last counters of a worker that has been replaced to the fleet's history. */
  retire(counters: Partial<CounterSnapshot> | undefined): void {
    if (counters !== undefined) this.retired = sumCounters([this.retired, counters]);
  }
}

// --- The fleet's statistics -------------------------------------------------------------------------------

const NUMERIC = ["sessionsTotal", "bytesUp", "bytesDown", "resentBytes", "ackBytes", "redials"] as const;
const MAPS = ["sessionsRefused", "stripeDeaths", "handshakeRejections"] as const;
const HISTOGRAMS = ["stripeRttSeconds", "sessionDurationSeconds"] as const;

/** Sums counter snapshots (absent fields stay absent unless one of them has it). */
export function sumCounters(all: readonly Partial<CounterSnapshot>[]): Partial<CounterSnapshot> {
  const out: Partial<CounterSnapshot> = {};
  for (const k of NUMERIC) if (all.some((c) => c[k] !== undefined)) out[k] = all.reduce((t, c) => t + (c[k] ?? 0), 0);
  for (const k of MAPS) {
    if (!all.some((c) => c[k] !== undefined)) continue;
    const m: Record<string, number> = {};
    for (const c of all) for (const [r, n] of Object.entries(c[k] ?? {})) m[r] = (m[r] ?? 0) + n;
    out[k] = m;
  }
  for (const k of HISTOGRAMS) {
    const hs = all.map((c) => c[k]).filter((h) => h !== undefined);
    if (hs.length > 0) out[k] = mergeHistograms(hs);
  }
  return out;
}

/** A session as the fleet lists it: which worker holds it. */
export type FleetSession = SessionSnapshot & { worker: number };

/**
 * The fleet as one StatsSource for the primary's /metrics and /api/sessions: `refresh()` (awaited by the
 * endpoint before it answers) asks every ready worker for its report; the rest reads the last answers.
 * Totals add the last counters of workers that have since exited, so counters never go down.
 */
export function fleetSource(fleet: Fleet): StatsSource & { refresh(): Promise<void>; statuses(): WorkerStatus[] } {
  let last: WorkerStatus[] = [];
  const lastCounters = new Map<number, { pid: number; counters: Partial<CounterSnapshot> }>();
  return {
    role: "server",
    async refresh() {
      last = await fleet.statuses();
      for (const st of last) {
        const prev = lastCounters.get(st.index);
        const now = st.report?.stats?.counters;
        // A worker whose pid changed was restarted: its predecessor's last counters become history.
        if (prev !== undefined && prev.pid !== st.pid) {
          fleet.retire(prev.counters);
          lastCounters.delete(st.index);
        }
        if (now !== undefined) lastCounters.set(st.index, { pid: st.pid, counters: now });
      }
    },
    statuses: () => last,
    sessions: () => last.flatMap((st) => (st.report?.stats?.sessions ?? []).map((x): FleetSession => ({ ...x, worker: st.index }))),
    counters: () => sumCounters([fleet.retiredCounters, ...[...lastCounters.values()].map((x) => x.counters)]),
    budget: () => {
      const bs = last.map((st) => st.report?.stats?.budget).filter((b) => b !== undefined);
      if (bs.length === 0) return undefined;
      return { usedBytes: bs.reduce((t, b) => t + b.usedBytes, 0), limitBytes: bs.reduce((t, b) => t + b.limitBytes, 0) };
    },
  };
}
