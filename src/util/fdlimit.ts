/**
 * Descriptor limits: keep the proxy's connections below the process's open-file limit, so it never runs
 * out of descriptors. What Bun 1.4.5 does at the limit (measured under `prlimit --nofile=64`):
 * - accept() failing with EMFILE reaches no handler: the listener retries in a busy loop (61–85 % of a
 *   core while idle) for as long as connections wait in the backlog; it accepts again by itself once
 *   descriptors are free.
 * - process.memoryUsage() throws "Failed to get memory usage"; reading files throws EMFILE.
 * - Bun.connect fails with ECONNREFUSED, not EMFILE: a target would look down.
 * Bun's listener cannot pause accepting (only stop(), which closes the socket and resets the backlog),
 * so the gate accepts and closes at once beyond its limit; that needs free descriptors for accept()
 * itself, which the margin below the limit keeps. Measured with the gate at 40 under a limit of 64:
 * 100 connections, 60 closed at once, 0 % CPU afterwards, memoryUsage() working.
 *
 * Limits, from the soft limit L (read at start; `ulimit -n`):
 * - `total` = L − RUNTIME_FDS: every connection, accepted or dialled, stays below it;
 * - `accept` = total − reserve, reserve = max(16, total / 16): accepted connections stay below it, so
 *   live sessions can always dial (the server's targets, the client's re-dialled stripes).
 */

import { readFileSync } from "node:fs";
import { stderrLog, type LogSink } from "../proxy/log.ts";

/** Descriptors left for the runtime itself: stdio, epoll, eventfd, timers, listeners, files it reads. */
export const RUNTIME_FDS = 32;

/** The open-file limits of this process. `Infinity` for "unlimited". */
export interface NofileLimit {
  soft: number;
  hard: number;
}

/** Parses the "Max open files" line of /proc/self/limits (Linux); undefined if absent. */
export function parseProcLimits(text: string): NofileLimit | undefined {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const num = (s: string) => (s === "unlimited" ? Infinity : Number(s));
  const soft = num(m[1]!);
  const hard = num(m[2]!);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/**
 * The soft and hard RLIMIT_NOFILE. Linux: /proc/self/limits (no process spawned). Elsewhere (macOS, the
 * BSDs) there is no /proc: the shell's `ulimit -Sn` / `ulimit -Hn` report the limits this process
 * inherited. undefined when neither works. The readers are parameters for tests.
 */
export function readNofileLimit(
  readProc: () => string = () => readFileSync("/proc/self/limits", "utf8"),
  shell: (arg: string) => string | undefined = (arg) => {
    const r = Bun.spawnSync(["sh", "-c", `ulimit ${arg}`], { stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 ? r.stdout.toString() : undefined;
  },
): NofileLimit | undefined {
  try {
    const parsed = parseProcLimits(readProc());
    if (parsed) return parsed;
  } catch {
    // not Linux (or /proc not mounted): try the shell
  }
  try {
    const num = (s: string | undefined) => (s === undefined ? NaN : s.trim() === "unlimited" ? Infinity : Number(s.trim()));
    const soft = num(shell("-Sn"));
    const hard = num(shell("-Hn"));
    if (!Number.isNaN(soft)) return { soft, hard: Number.isNaN(hard) ? soft : hard };
  } catch {
    // no shell either
  }
  return undefined;
}

/** Connection limits derived from a descriptor limit (see the module comment). */
export interface ConnectionLimits {
  /** The soft descriptor limit they were computed from. */
  soft: number;
  /** Connections of every kind together stay below this. */
  total: number;
  /** Accepted connections stay below this. */
  accept: number;
}

/**
 * Limits below the soft descriptor limit `soft`; `configured` (a --max-connections) may only lower the
 * accept limit. An unlimited or unknown limit is treated as `fallback` (1024, the usual default).
 */
export function connectionLimits(soft: number | undefined, configured?: number, fallback = 1024): ConnectionLimits {
  const s = soft === undefined || !Number.isFinite(soft) ? Math.max(fallback, configured ?? 0) : soft;
  const total = Math.max(1, s - RUNTIME_FDS);
  const reserve = Math.max(16, Math.floor(total / 16));
  let accept = Math.max(1, total - reserve);
  if (configured !== undefined) accept = Math.max(1, Math.min(accept, configured));
  return { soft: s, total, accept };
}

/** One line for the start log: "descriptor limit 1024: up to 930 connections accepted, 992 in all". */
export function describeLimits(l: ConnectionLimits): string {
  return `descriptor limit ${l.soft}: up to ${l.accept} connections accepted, ${l.total} in all`;
}

/** What to do with a connection just accepted. */
export type AcceptDecision = "accept" | "close";

/**
 * Counts connections against ConnectionLimits and decides. Pure; the clock (ms) is passed in, and the
 * condition is logged once per episode: when the limit is first hit, and when the count has fallen to
 * `resumeAt` (5 % below the limit) and connections are accepted again, with how many were closed.
 * Between the two it keeps closing new connections, so it does not flap at the edge.
 */
export class ConnectionGate {
  /** Accepted connections open now. */
  accepted = 0;
  /** Dialled connections open now. */
  dialled = 0;
  /** Connections closed at once because of the limit, since the gate started. */
  refusedTotal = 0;
  /** Dials refused because of the limit, since the gate started. */
  dialsRefused = 0;
  readonly resumeAt: number;
  private closing = false;
  private episodeStart = 0;
  private episodeRefused = 0;
  private dialEpisode = false;

  constructor(
    readonly limits: ConnectionLimits,
    private readonly log: LogSink,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.resumeAt = Math.max(0, limits.accept - Math.max(1, Math.floor(limits.accept / 20)));
  }

  /** Whether new connections are being closed at once. */
  get full(): boolean {
    return this.closing;
  }

  /** A connection was just accepted: "accept" counts it; "close" means terminate it now. */
  onAccept(): AcceptDecision {
    this.maybeResume();
    const open = this.accepted + this.dialled;
    if (!this.closing && (this.accepted >= this.limits.accept || open >= this.limits.total)) {
      this.closing = true;
      this.episodeStart = this.now();
      this.episodeRefused = 0;
      this.log(
        `connection limit reached (${this.accepted} accepted, ${open} in all; ${describeLimits(this.limits)}): ` +
          `closing new connections at once until ${this.resumeAt} are open`,
      );
    }
    if (this.closing) {
      this.episodeRefused++;
      this.refusedTotal++;
      return "close";
    }
    this.accepted++;
    return "accept";
  }

  /** An outgoing connection is about to be opened: true counts it; false means fail it (E_FD_LIMIT). */
  onDial(): boolean {
    if (this.accepted + this.dialled < this.limits.total) {
      if (this.dialEpisode) {
        this.dialEpisode = false;
        this.log(`outgoing connections possible again (${this.accepted + this.dialled} open)`);
      }
      this.dialled++;
      return true;
    }
    this.dialsRefused++;
    if (!this.dialEpisode) {
      this.dialEpisode = true;
      this.log(`descriptor limit: cannot open outgoing connections (${this.accepted + this.dialled} open, ${this.limits.total} at most)`);
    }
    return false;
  }

  /** A connection counted by onAccept ("accepted") or onDial ("dialled") has closed. */
  onClose(kind: "accepted" | "dialled"): void {
    if (kind === "accepted") this.accepted = Math.max(0, this.accepted - 1);
    else this.dialled = Math.max(0, this.dialled - 1);
    this.maybeResume();
  }

  /** Ends a closing episode once enough connections have gone. */
  private maybeResume(): void {
    if (!this.closing || this.accepted > this.resumeAt || this.accepted + this.dialled >= this.limits.total) return;
    this.closing = false;
    const s = ((this.now() - this.episodeStart) / 1000).toFixed(1);
    this.log(`accepting connections again (${this.accepted} open): ${this.episodeRefused} closed at once over ${s} s`);
  }
}

// --- the process's gate ------------------------------------------------------------------------------

let processGate: ConnectionGate | undefined;
let gateLog: LogSink = stderrLog;

/**
 * The gate every TcpPipe of this process is counted against (src/pipe/tcp.ts): descriptors are per
 * process, so every listener and dial shares it. Created on first use from the soft limit read then.
 */
export function connectionGate(): ConnectionGate {
  processGate ??= new ConnectionGate(connectionLimits(readNofileLimit()?.soft), (line) => gateLog(line));
  return processGate;
}

/**
 * Replaces the process's gate (main, for --max-connections; tests, for small limits); undefined makes
 * the next use create one from the descriptor limit again. Returns the previous one. Connections
 * already counted by the old gate are released to it.
 */
export function setConnectionGate(gate: ConnectionGate | undefined): ConnectionGate | undefined {
  const previous = processGate;
  processGate = gate;
  return previous;
}

/** Where the process gate's lines go (main sets its logger). */
export function setConnectionGateLog(log: LogSink): void {
  gateLog = log;
}
