/**
 * What every long-running mode shares once its listeners are up: the operations endpoint
 * (`--metrics`), the lifecycle (drain on SIGTERM/SIGINT, reload on SIGHUP, statistics on SIGUSR1),
 * and fatal start-up errors that name the address, the port and the reason.
 */

import type { RunConfig } from "../cli/args.ts";
import { loadCommand } from "../cli/config.ts";
import { StriperError, type SystemErrorCode } from "../errors.ts";
import { formatAddress, type Address } from "../pipe/tcp.ts";
import { logEvent, type LogEvent, type LogSink } from "../proxy/log.ts";
import { VERSION } from "../version.ts";
import { startOpsServer, type OpsServer } from "./http.ts";
import { runLifecycle, type Drainable, type LifecycleHandle, type SignalSource } from "./lifecycle.ts";
import type { HealthState } from "./metrics.ts";
import type { StatsSource } from "./stats.ts";

/** Readable reasons for the errors a listener meets at start-up. */
const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this host",
  EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
  EPERM: "operation not permitted",
};

/** A listener could not start: `code` is the system's (EADDRINUSE...) or E_LISTEN. */
export class ListenError extends StriperError {
  constructor(address: Address, what: string, cause: unknown) {
    const sys = (cause as { code?: unknown }).code;
    const code = typeof sys === "string" ? (sys as SystemErrorCode) : "E_LISTEN";
    const reason = LISTEN_REASONS[code] ?? (cause instanceof Error ? cause.message : String(cause));
    super(code, `cannot listen on ${formatAddress(address)}${what ? ` (${what})` : ""}: ${reason}`, { cause });
    this.name = "ListenError";
  }
}

/** Runs `start`, turning a bind failure into a ListenError naming `address`. */
export function listenOrFail<T>(address: Address, what: string, start: () => T): T {
  try {
    return start();
  } catch (err) {
    // A ListenError already names its address (a worker's join port, say).
    throw err instanceof ListenError ? err : new ListenError(address, what, err);
  }
}

/** Options of runDaemon. */
export interface DaemonOptions {
  cmd: RunConfig;
  /** The original arguments (re-read, with the config file if any, on SIGHUP). */
  argv: string[];
  units: readonly Drainable[];
  /** The proxies' statistics, when they expose them. */
  source: StatsSource | undefined;
  /** SIGUSR1: the events to log (a line per session and per stripe). */
  stats: () => LogEvent[];
  log: LogSink;
  /**
   * Checks what a reloaded config needs beyond its options (the key files) and throws, with a one-line
   * message, when it cannot apply: the reload is then refused and the running config kept.
   */
  prepare?: (next: RunConfig) => void;
  /** Applies a reloaded config whose changes are all live (see OptionSpec.reload); awaited before the reload line. */
  apply?: (next: RunConfig, changed: string[]) => unknown;
  /** From processSignals(), taken before the listeners started. */
  signals: SignalSource;
  /** What /healthz says, given the lifecycle's state (default: that state): a server's fleet of workers. */
  health?: (lifecycle: HealthState) => HealthState;
  /** More JSON endpoints on the operations address (`/api/<name>`). */
  api?: Readonly<Record<string, () => Promise<unknown>>>;
  /** Serve --metrics here (default true; a server's workers leave it to their primary). */
  serveOps?: boolean;
  /** Ends the process once the lifecycle has stopped (default: exit after 200 ms, for reset frames to leave). */
  exit?: (code: number) => void;
}

/** A running daemon. */
export interface Daemon {
  lifecycle: LifecycleHandle;
  ops: OpsServer | undefined;
}

/** Starts the operations endpoint (if asked) and the lifecycle on the process's signals. */
export function runDaemon(o: DaemonOptions): Daemon {
  const info = { version: VERSION, mode: o.cmd.mode, startedAt: Date.now() };
  let lifecycle: LifecycleHandle | undefined;
  const state = (): HealthState => lifecycle?.state() ?? "accepting";
  const health = o.health ? () => o.health!(state()) : state;
  const metrics = o.serveOps === false ? undefined : o.cmd.global.metrics;
  let ops: OpsServer | undefined;
  if (metrics) {
    ops = listenOrFail(metrics, "metrics", () => startOpsServer({ listen: metrics, source: o.source, info, health, api: o.api }));
    o.log(`metrics on ${ops.url} (/metrics, /healthz, /api/sessions, dashboard at /)${o.source ? "" : "; this mode has no session statistics"}`);
  }
  lifecycle = runLifecycle({
    units: o.units,
    drainTimeoutMs: o.cmd.global["drain-timeout"] ?? 0,
    log: o.log,
    // Give reset frames a moment to leave before the process ends.
    exit: o.exit ?? ((code) => setTimeout(() => process.exit(code), 200).unref()),
    stats: () => {
      const events = o.stats();
      if (events.length === 0) o.log("no live sessions");
      for (const ev of events) logEvent(o.log, ev);
    },
    config: o.cmd,
    // The config file when there is one, else the command line again: either way the key files are
    // read anew, so SIGHUP applies a key added or removed without a restart.
    reread: async () => {
      const next = await loadCommand(o.argv);
      if (!("listeners" in next)) throw new Error("the command line no longer names a run");
      o.prepare?.(next);
      return next;
    },
    apply: o.apply,
    signals: o.signals,
  });
  return { lifecycle, ops };
}
