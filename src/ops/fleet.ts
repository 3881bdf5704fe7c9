/**
 * The daemon side of `server --workers N` (the processes themselves: src/proxy/primary.ts and
 * src/proxy/workers.ts):
 *
 *   runFleet        the primary: starts the workers, then runs the lifecycle and the operations endpoint
 *                   for all of them. SIGTERM/SIGINT drain every worker (a second one stops them at once);
 *                   SIGHUP (with --config) re-reads and validates the file here, then has every worker
 *                   reload and waits for all before its "config reloaded" line; SIGUSR1 goes to every
 *                   worker. /healthz is 200 while the fleet accepts and at least one worker is ready;
 *                   /metrics and /api/sessions are the workers' figures added up (each session tagged
 *                   with its worker); /api/workers is each worker's own report.
 *   workerOptions   what a worker's server gets: the shared port, its join port, the balancers.
 *   workerLog       a worker's log lines, prefixed "worker k: ".
 */

import { KeyError } from "../secure/errors.ts";
import type { RunConfig, Values } from "../cli/args.ts";
import { UsageError } from "../errors.ts";
import { formatAddress, type Address } from "../pipe/tcp.ts";
import type { WorkerRole } from "../proxy/join.ts";
import type { LogEvent, LogSink } from "../proxy/log.ts";
import { BalancerSet } from "../proxy/proxyproto.ts";
import { Fleet, fleetSource } from "../proxy/primary.ts";
import { joinPortsFor, workerCommand, type WorkerSpec } from "../proxy/workers.ts";
import { runDaemon } from "./daemon.ts";
import { processSignals, type Drainable, type SignalSource } from "./lifecycle.ts";

/** How many workers a server runs: `--workers`, else one per core. */
export function workerCount(cmd: RunConfig): number {
  if (cmd.mode !== "server") return 1;
  return cmd.global.workers ?? Math.max(1, navigator.hardwareConcurrency || 1);
}

/** A worker's log: every line prefixed with "worker k: "; structured events also carry the field `worker`. */
export function workerLog(log: LogSink, index: number): LogSink {
  const sink = (line: string): void => log(`worker ${index}: ${line}`);
  const emit = log.emit;
  if (emit === undefined) return sink;
  return Object.assign(sink, {
    emit: (ev: LogEvent) => emit({ ...ev, msg: `worker ${index}: ${ev.msg}`, fields: { ...ev.fields, worker: index } }),
  });
}

/** The load balancers of a listener (`--proxy-protocol-from`), if any. */
export function balancersOf(l: Values): BalancerSet | undefined {
  const from = l["proxy-protocol-from"];
  return from !== undefined && from.length > 0 ? new BalancerSet(from) : undefined;
}

/** The scaling options of listener `i`'s server in worker `spec` (none for a single process). */
export function workerOptions(l: Values, i: number, spec: WorkerSpec | undefined): { listen: Address; reusePort?: boolean; worker?: WorkerRole } {
  const listen = l.listen!;
  if (spec === undefined) return { listen };
  return {
    listen: { host: listen.host, port: spec.ports[i]! },
    reusePort: true,
    worker: { index: spec.index, workers: spec.workers, join: { host: listen.host, port: spec.joinPorts[i]! }, advertise: l["advertise-join"] !== "off" },
  };
}

/** Each listener's address and join ports; UsageError when two listeners' ports collide. */
function plan(cmd: RunConfig, workers: number): { listen: Address; joinPorts: number[] }[] {
  const out = cmd.listeners.map((l) => ({ listen: l.listen!, joinPorts: joinPortsFor(l.listen!, l["join-ports"], workers) }));
  const seen = new Map<string, string>();
  for (const [i, l] of out.entries()) {
    const ports = [l.listen.port, ...l.joinPorts].filter((p) => p !== 0);
    for (const [j, p] of ports.entries()) {
      const key = `${l.listen.host}:${p}`;
      const what = j === 0 ? `listener ${i + 1}'s listen port` : `listener ${i + 1}'s join port for worker ${j - 1}`;
      const other = seen.get(key);
      if (other !== undefined) throw new UsageError(`port ${p} is both ${other} and ${what}: give --join-ports`);
      seen.set(key, what);
    }
  }
  return out;
}

/** Options of runFleet. */
export interface FleetRunOptions {
  cmd: RunConfig;
  /** The command line, given to every worker as it is. */
  argv: string[];
  workers: number;
  /** Loads (and so checks) the keys of `cmd`: throws KeyError. Run before any worker starts. */
  checkKeys: (cmd: RunConfig) => unknown;
  log: LogSink;
}

/** Runs the primary of a server of several workers (see the module comment). */
export async function runFleet(o: FleetRunOptions): Promise<void> {
  const { cmd, workers, log } = o;
  o.checkKeys(cmd); // a bad key: one line and exit 2 here, not once per worker
  const listeners = plan(cmd, workers);
  const signals = processSignals(); // before the workers: no signal may find the default action
  const fleet = new Fleet({ workers, command: workerCommand(o.argv), listeners, log });
  await fleet.start();
  cmd.listeners.forEach((l, i) => {
    const at = formatAddress({ host: l.listen!.host, port: fleet.listenPorts[i]! });
    const serves = [l.target !== undefined ? `target ${formatAddress(l.target)}` : "", l.allow?.length ? `allow ${l.allow.join(" ")}` : ""].filter((x) => x !== "");
    log(`server listening on ${at} ${serves.join(" ")} with ${workers} workers (pids ${fleet.pids.join(", ")})`);
  });
  const source = fleetSource(fleet);
  const unit: Drainable = {
    get liveSessions() {
      return fleet.liveSessions;
    },
    drain: () => fleet.drain(),
    stop: () => void fleet.stop(),
  };
  // SIGUSR1 goes to every worker as it is; SIGHUP and SIGTERM are the lifecycle's (apply, drain, stop).
  const forwarding: SignalSource = {
    on(sig, fn) {
      signals.on(sig, () => {
        if (sig === "SIGUSR1") fleet.signal("SIGUSR1");
        fn();
      });
    },
  };
  try {
    runDaemon({
      cmd,
      argv: o.argv,
      units: [unit],
      source,
      stats: () => [
        {
          event: "stats.fleet",
          msg: `${fleet.ready} of ${workers} workers ready (pids ${fleet.pids.join(", ")}), ${fleet.liveSessions} session(s); each worker lists its own`,
          fields: { workers, ready: fleet.ready, sessions: fleet.liveSessions },
        },
      ],
      log,
      // A key file that cannot be read or parsed refuses the reload here, before any worker is asked: the
      // primary's line then says what the workers would each have refused.
      prepare: (next) => {
        try {
          o.checkKeys(next);
        } catch (err) {
          if (err instanceof KeyError) throw new Error(`${err.code} ${err.message}`);
          throw err;
        }
      },
      apply: () => fleet.reload(),
      signals: forwarding,
      // No worker ready (all of them restarting) is not a server a balancer should send sessions to.
      health: (state) => (state === "accepting" && fleet.ready === 0 ? "stopped" : state),
      api: {
        workers: async () => {
          await source.refresh();
          return source.statuses();
        },
      },
      // The primary goes last: its workers first finish (or are stopped), so nothing outlives it.
      exit: (code) => void fleet.stop().then(() => process.exit(code)),
    });
  } catch (err) {
    fleet.kill();
    throw err;
  }
}
