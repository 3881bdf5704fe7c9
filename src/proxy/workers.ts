/**
 * Worker processes of one server (`server --workers N`): N processes serving one listening address
 * through SO_REUSEPORT, each also on a join port of its own, so that every stripe of a session reaches
 * the process holding it (src/proxy/join.ts). Bun cannot pass sockets between processes, so nothing is
 * relayed between them: a worker only ever handles stripes that reached it.
 *
 * The primary process runs no listener of its own (src/proxy/primary.ts): it starts the workers,
 * restarts one that dies (its sessions die with it: their clients see stripes fail, then
 * UNKNOWN_SESSION from the restarted worker or their grace timer, and reset their apps), forwards SIGHUP
 * and SIGUSR1, drains them all on SIGTERM/SIGINT, and serves the operations endpoint for the fleet from
 * the workers' reports over IPC.
 *
 * This file: what both sides share (the spec a worker is started with, join ports, restart backoff, the
 * IPC messages) and the worker's side. A worker is the ordinary server started by main.ts with the
 * WORKER_ENV variable set: it shares the port, opens its join port, sends "ready", answers report
 * requests, and stops when the primary's IPC channel closes (the primary died, even by SIGKILL: its
 * workers must not outlive it).
 */

import { StriperError, UsageError } from "../errors.ts";
import type { BudgetSnapshot, CounterSnapshot, SessionSnapshot, StatsSource } from "../ops/stats.ts";
import type { Address } from "../pipe/tcp.ts";
import { MAX_WORKERS } from "./join.ts";

/** The environment variable that makes a process worker k of a server (its value: a WorkerSpec as JSON). */
export const WORKER_ENV = "TCP_STRIPER_WORKER";
/** How long the primary waits for a worker's report. */
export const REPORT_TIMEOUT_MS = 2000;
/** How long the primary waits for a worker to finish a reload. */
export const RELOAD_TIMEOUT_MS = 10_000;
/** Most sessions a worker lists in its report (the default session limit is 1024). */
export const MAX_REPORTED_SESSIONS = 65_536;
/** A worker that ran less than this before it exited counts as crashing (its restarts back off). */
export const QUICK_EXIT_MS = 10_000;
/** First restart delay after a quick exit, doubled for each further one, up to RESTART_MAX_MS. */
export const RESTART_BASE_MS = 100;
export const RESTART_MAX_MS = 5000;

/** What worker k is told at start. */
export interface WorkerSpec {
  /** 0 … workers − 1. */
  index: number;
  workers: number;
  /** Per listener: the port to share (0 only for worker 0's first start: any free port). */
  ports: number[];
  /** Per listener: this worker's join port (0: any free port). */
  joinPorts: number[];
}

const isPort = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 65535;

/** The spec in the environment, or undefined when this process is not a worker. Throws E_WORKER when malformed. */
export function workerSpecOf(env: Record<string, string | undefined>): WorkerSpec | undefined {
  const text = env[WORKER_ENV];
  if (text === undefined) return undefined;
  let v: Partial<WorkerSpec>;
  try {
    v = JSON.parse(text) as Partial<WorkerSpec>;
  } catch {
    throw new StriperError("E_WORKER", `${WORKER_ENV} is not JSON`);
  }
  const ok =
    Number.isInteger(v.workers) &&
    v.workers! >= 1 &&
    v.workers! <= MAX_WORKERS &&
    Number.isInteger(v.index) &&
    v.index! >= 0 &&
    v.index! < v.workers! &&
    Array.isArray(v.ports) &&
    v.ports.every(isPort) &&
    Array.isArray(v.joinPorts) &&
    v.joinPorts.length === v.ports.length &&
    v.joinPorts.every(isPort);
  if (!ok) throw new StriperError("E_WORKER", `${WORKER_ENV} is not a valid worker spec: ${text.slice(0, 200)}`);
  return v as WorkerSpec;
}

/**
 * Each worker's join port for one listener: `--join-ports FIRST-LAST` gives worker k FIRST + k (the range
 * must hold one port per worker); `0` lets each take any free port; without the option, the listen port
 * + 1 + k (a listen port of 0: any free port). Throws UsageError when the range is too small or runs past
 * 65535, or when a join port is the listen port.
 */
export function joinPortsFor(listen: Address, option: string | undefined, workers: number): number[] {
  let first: number;
  if (option === "0") return new Array<number>(workers).fill(0);
  if (option !== undefined) {
    const m = /^(\d+)-(\d+)$/.exec(option);
    if (m === null) throw new UsageError(`--join-ports: expected FIRST-LAST or 0, got "${option}"`);
    first = Number(m[1]);
    const count = Number(m[2]) - first + 1;
    if (count < workers) throw new UsageError(`--join-ports ${option}: ${count} port(s) for ${workers} workers`);
  } else {
    if (listen.port === 0) return new Array<number>(workers).fill(0);
    first = listen.port + 1;
  }
  const ports = Array.from({ length: workers }, (_, k) => first + k);
  if (ports[ports.length - 1]! > 65535) throw new UsageError(`join ports ${first}-${first + workers - 1} run past 65535: give --join-ports`);
  if (ports.includes(listen.port)) throw new UsageError(`join ports ${first}-${first + workers - 1} include the listen port ${listen.port}`);
  return ports;
}

/** The delay before restarting a worker after its `quick`-th quick exit in a row (0: it ran long enough). */
export function restartDelayMs(quick: number): number {
  return quick === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (quick - 1));
}

/** The command that starts a worker: this program with the same arguments (a compiled binary is its own runtime). */
export function workerCommand(argv: readonly string[]): string[] {
  const compiled = Bun.main.startsWith("/$bunfs/");
  return compiled ? [process.execPath, ...argv] : [process.execPath, Bun.main, ...argv];
}

// --- Messages ----------------------------------------------------------------------------------------

/** One session as a worker holds it: which stripe indices are attached to it in that worker. */
export interface HeldSession {
  /** Short hex id, as in the logs. */
  id: string;
  /** Indices of the stripes this worker has attached to it (live or not yet replaced). */
  stripes: number[];
  usableStripes: number;
}

/** A worker's own account of itself, sent to the primary on request. */
export interface WorkerReport {
  worker: number;
  pid: number;
  /** Per listener: its join port. */
  joinPorts: number[];
  /** JOINs it answered WRONG_WORKER. */
  wrongWorker: number;
  sessionCount: number;
  /** The sessions it holds (at most MAX_REPORTED_SESSIONS). */
  sessions: HeldSession[];
  /** Its statistics, when its proxies expose them (StatsSource snapshots). */
  stats?: { sessions: SessionSnapshot[]; counters: Partial<CounterSnapshot>; budget: BudgetSnapshot | undefined };
}

/** Worker → primary. */
export type FromWorker =
  | { kind: "ready"; ports: number[]; joinPorts: number[] }
  | { kind: "sessions"; live: number }
  | { kind: "report"; id: number; report: WorkerReport }
  /** A reload asked for by the primary is over (applied, or refused with its own log line). */
  | { kind: "reloaded"; id: number };

/** Primary → worker. */
export type ToWorker = { kind: "report"; id: number } | { kind: "reload"; id: number };

// --- Worker side ------------------------------------------------------------------------------------------

/** What a worker process needs of its servers (one per listener) to report on them. */
export interface WorkerServer {
  readonly port: number;
  readonly joinPort: number | undefined;
  readonly wrongWorker: number;
  readonly sessions: ReadonlyMap<string, { closed: boolean; metrics(): { usableStripes: number; perStripe: readonly { index: number }[] } }>;
}

/**
 * Connects a worker to its primary: sends "ready" with the ports it bound, reports its live session count
 * when it changes (at most every 250 ms), answers report requests, and calls `orphaned` when the primary's
 * channel closes (the primary died).
 */
export function serveAsWorker(
  spec: WorkerSpec,
  servers: readonly WorkerServer[],
  hooks: {
    /** The worker's statistics, when its proxies expose them. */
    stats: () => WorkerReport["stats"];
    /** Re-read config and keys as on SIGHUP; resolves when done. */
    reload: () => Promise<void>;
    /** The primary is gone. */
    orphaned: () => void;
  },
): void {
  const send = (m: FromWorker): void => {
    try {
      process.send?.(m);
    } catch {
      // The channel is gone: the disconnect handler deals with it.
    }
  };
  const report = (): WorkerReport => {
    const sessions: HeldSession[] = [];
    let count = 0;
    for (const s of servers) {
      for (const [key, session] of s.sessions) {
        if (session.closed) continue;
        count++;
        if (sessions.length >= MAX_REPORTED_SESSIONS) continue;
        const m = session.metrics();
        sessions.push({ id: key.slice(0, 12), stripes: m.perStripe.map((p) => p.index), usableStripes: m.usableStripes });
      }
    }
    return {
      worker: spec.index,
      pid: process.pid,
      joinPorts: servers.map((s) => s.joinPort ?? 0),
      wrongWorker: servers.reduce((t, s) => t + s.wrongWorker, 0),
      sessionCount: count,
      sessions,
      stats: hooks.stats(),
    };
  };
  process.on("message", (m: ToWorker) => {
    if (!Number.isInteger(m?.id)) return;
    switch (m.kind) {
      case "report":
        send({ kind: "report", id: m.id, report: report() });
        return;
      case "reload":
        void hooks.reload().finally(() => send({ kind: "reloaded", id: m.id }));
        return;
      default: {
        const never: never = m;
        throw new Error(`unknown message ${JSON.stringify(never)}`);
      }
    }
  });
  // Measured (Bun 1.4.5): a child spawned with `ipc` gets "disconnect" when its parent dies, SIGKILL too.
  process.on("disconnect", hooks.orphaned);
  let live = 0;
  setInterval(() => {
    const n = servers.reduce((t, s) => t + s.sessions.size, 0);
    if (n !== live) send({ kind: "sessions", live: (live = n) });
  }, 250).unref();
  send({ kind: "ready", ports: servers.map((s) => s.port), joinPorts: servers.map((s) => s.joinPort ?? 0) });
}
