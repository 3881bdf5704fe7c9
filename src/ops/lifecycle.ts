/**
 * Drain, stop and reload: a pure state machine (Lifecycle, the clock passed in) and its driver
 * (runLifecycle) that wires it to signals, timers and the proxies' hooks.
 *
 *   accepting ──SIGTERM/SIGINT──> draining ──all sessions ended──> stopped (exit 0)
 *                                    │ ──deadline (--drain-timeout)──> stopped: the rest reset, reason logged
 *                                    └──second SIGTERM/SIGINT──> stopped at once
 *   SIGHUP (accepting): re-read the config (and keys), validate, apply, or refuse with one line and keep
 *   the running config. SIGUSR1: live statistics, in any state.
 */

import { BrokenError, type StriperError } from "../errors.ts";
import { OPTION_SPECS, formatValue, type OptionValue, type RunConfig, type Values } from "../cli/args.ts";

/** Where the process is. */
export type LifecycleState = "accepting" | "draining" | "stopped";

/** The signals the process handles. */
export type LifecycleSignal = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGUSR1";

/** Why the process stopped. */
export type StopReason = "drained" | "deadline" | "second-signal";

/** What the driver must do after an event. */
export type LifecycleAction =
  | { kind: "drain"; deadline: number } // stop accepting, drain every unit, wake at `deadline`
  | { kind: "stop"; reason: StopReason } // reset what is left, exit 0
  | { kind: "reload" }
  | { kind: "stats" }
  | { kind: "ignore"; why: string };

/** The pure state machine; see the module comment. Times are ms on any monotonic clock. */
export class Lifecycle {
  state: LifecycleState = "accepting";
  /** When draining ends by force. */
  deadline: number | undefined;

  constructor(readonly drainTimeoutMs: number) {}

  /** A signal arrived at `now`. */
  signal(sig: LifecycleSignal, now: number): LifecycleAction {
    switch (sig) {
      case "SIGTERM":
      case "SIGINT":
        if (this.state === "accepting") {
          if (this.drainTimeoutMs <= 0) return this.stop("deadline");
          this.state = "draining";
          this.deadline = now + this.drainTimeoutMs;
          return { kind: "drain", deadline: this.deadline };
        }
        if (this.state === "draining") return this.stop("second-signal");
        return { kind: "ignore", why: "already stopped" };
      case "SIGHUP":
        if (this.state === "accepting") return { kind: "reload" };
        return { kind: "ignore", why: `reload ignored while ${this.state}` };
      case "SIGUSR1":
        return this.state === "stopped" ? { kind: "ignore", why: "already stopped" } : { kind: "stats" };
      default: {
        const never: never = sig;
        throw new Error(`unhandled signal ${String(never)}`);
      }
    }
  }

  /** Every unit reported that its last session ended. */
  drained(): LifecycleAction {
    if (this.state !== "draining") return { kind: "ignore", why: `drained while ${this.state}` };
    return this.stop("drained");
  }

  /** The driver's timer fired at `now`. */
  tick(now: number): LifecycleAction {
    if (this.state !== "draining" || this.deadline === undefined) return { kind: "ignore", why: `timer while ${this.state}` };
    if (now < this.deadline) return { kind: "ignore", why: "before the deadline" };
    return this.stop("deadline");
  }

  private stop(reason: StopReason): LifecycleAction {
    this.state = "stopped";
    this.deadline = undefined;
    return { kind: "stop", reason };
  }
}

/**
 * What a proxy (one listener) implements for drain and stop. The proxies of issue 8 implement it;
 * main.ts adapts older ones.
 */
export interface Drainable {
  /**
   * Stop accepting new sessions at once — new OPENs refused (sessions_refused reason "draining"),
   * app connections of a client refused — while live sessions go on, including their re-dialled
   * stripes (JOIN). Resolves when the last live session has ended.
   */
  drain(): Promise<void>;
  /** Reset every session left with `reason` (never a clean EOF) and close the listener. Idempotent. */
  stop(reason: StriperError): void;
  /** Live sessions (for the stop log line). */
  readonly liveSessions: number;
}

/** Options whose change a running process can take on SIGHUP (rows with reload: "live"). */
export function liveReloadable(name: string): boolean {
  return OPTION_SPECS.some((o) => o.name === name && o.reload === "live");
}

/** What changed between two configs: option names, and which of them need a restart. */
export function diffConfig(old: RunConfig, next: RunConfig): { changed: string[]; needRestart: string[] } {
  const changed = new Set<string>();
  const text = (v: Values, name: string): string | undefined => {
    const x = (v as Record<string, OptionValue | undefined>)[name];
    const spec = OPTION_SPECS.find((o) => o.name === name && o.modes.includes(old.mode));
    return x === undefined || !spec ? undefined : spec.repeatable ? (x as OptionValue[]).map((y) => formatValue(spec, y)).join(" ") : formatValue(spec, x);
  };
  const compare = (a: Values, b: Values): void => {
    for (const name of new Set([...Object.keys(a), ...Object.keys(b)])) if (text(a, name) !== text(b, name)) changed.add(name);
  };
  if (old.mode !== next.mode) changed.add("mode");
  compare(old.global, next.global);
  if (old.listeners.length !== next.listeners.length) changed.add("listener");
  for (let i = 0; i < Math.min(old.listeners.length, next.listeners.length); i++) compare(old.listeners[i]!, next.listeners[i]!);
  const all = [...changed].sort();
  return { changed: all, needRestart: all.filter((n) => !liveReloadable(n)) };
}

/** Timers, injectable for tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(t: unknown): void;
}

const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as Timer),
};

/** Where signals come from (the process, or a test's emitter). */
export interface SignalSource {
  on(sig: LifecycleSignal, fn: () => void): void;
}

const SIGNALS: readonly LifecycleSignal[] = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"];

/**
 * The process's signals, caught from now on: call it before the listeners start, so a signal that
 * arrives before the lifecycle is wired (a SIGHUP right after the "listening" line) is held and
 * delivered then, instead of taking the default action and killing the process.
 */
export function processSignals(): SignalSource {
  const handlers = new Map<LifecycleSignal, () => void>();
  const held: LifecycleSignal[] = [];
  for (const sig of SIGNALS) {
    process.on(sig, () => {
      const h = handlers.get(sig);
      if (h) h();
      else if (held.length < 16) held.push(sig);
    });
  }
  return {
    on(sig, fn) {
      handlers.set(sig, fn);
      for (let i = 0; i < held.length; ) {
        if (held[i] === sig) {
          held.splice(i, 1);
          fn();
        } else i++;
      }
    },
  };
}

/** Options of runLifecycle. */
export interface LifecycleOptions {
  units: readonly Drainable[];
  drainTimeoutMs: number;
  log: (line: string) => void;
  /** Exits the process (after a short pause for reset frames, in main). */
  exit: (code: number) => void;
  /** Prints live statistics (SIGUSR1). */
  stats: () => void;
  /** The running config; `reread` loads and validates it again (throws UsageError/ConfigFileError). */
  config?: RunConfig;
  reread?: () => Promise<RunConfig>;
  /**
   * Applies a valid new config whose changes are all live-reloadable (and re-reads key files); awaited,
   * so the "config reloaded" line comes once it is applied everywhere (every worker of a server).
   */
  apply?: (next: RunConfig, changed: string[]) => unknown;
  signals?: SignalSource;
  clock?: Clock;
}

/** A running lifecycle: its state (for /healthz) and the machine (for tests). */
export interface LifecycleHandle {
  state(): LifecycleState;
  /** Feeds a signal as if it had arrived (what the signal handlers call). */
  signal(sig: LifecycleSignal): void;
  /** Resolves when a reload attempt finishes (tests). */
  reloading: Promise<void>;
}

/** Wires a Lifecycle to signals, a deadline timer and the units' drain/stop hooks. */
export function runLifecycle(o: LifecycleOptions): LifecycleHandle {
  const clock = o.clock ?? realClock;
  const machine = new Lifecycle(o.drainTimeoutMs);
  let timer: unknown;
  let current = o.config;
  const started = { at: 0 };
  const handle: LifecycleHandle = {
    state: () => machine.state,
    signal: (sig) => act(machine.signal(sig, clock.now()), sig),
    reloading: Promise.resolve(),
  };

  const stop = (reason: StopReason): void => {
    if (timer !== undefined) clock.clearTimeout(timer);
    const left = o.units.reduce((t, u) => t + u.liveSessions, 0);
    const err =
      reason === "deadline"
        ? new BrokenError("E_DRAIN_TIMEOUT", `drain deadline of ${o.drainTimeoutMs} ms passed`)
        : new BrokenError("E_SHUTDOWN", reason === "second-signal" ? "stopped by a second signal" : "shutting down");
    for (const u of o.units) u.stop(err);
    const took = Math.round(clock.now() - started.at);
    const why =
      reason === "drained"
        ? `every session ended (${took} ms)`
        : reason === "deadline"
          ? `drain deadline of ${o.drainTimeoutMs} ms passed, ${left} session(s) reset (${err.code})`
          : `second signal, ${left} session(s) reset (${err.code})`;
    o.log(`stopped: ${why}`);
    o.exit(0);
  };

  const act = (a: LifecycleAction, sig?: LifecycleSignal): void => {
    switch (a.kind) {
      case "drain": {
        started.at = clock.now();
        const live = o.units.reduce((t, u) => t + u.liveSessions, 0);
        // Stop accepting before saying so: whoever reads the line may try a new connection at once
        // (a client's listener closed after the line let the kernel accept one, then reset it).
        const drained = Promise.all(o.units.map((u) => u.drain()));
        o.log(`${sig ?? "signal"}: draining ${live} session(s), new ones refused; up to ${o.drainTimeoutMs} ms (a second ${sig ?? "signal"} stops at once)`);
        // A timer may fire a little before the deadline by the monotonic clock (measured: 300 ms timers
        // fired at 299.x ms): the machine then ignores the tick, and the timer is armed again.
        const arm = (): void => {
          timer = clock.setTimeout(() => {
            const next = machine.tick(clock.now());
            if (next.kind === "ignore" && machine.state === "draining") arm();
            else act(next);
          }, Math.max(1, a.deadline - clock.now()));
        };
        arm();
        drained.then(() => act(machine.drained()));
        return;
      }
      case "stop":
        stop(a.reason);
        return;
      case "stats":
        o.stats();
        return;
      case "reload":
        handle.reloading = reload();
        return;
      case "ignore":
        if (sig) o.log(`${sig}: ${a.why}`);
        return;
      default: {
        const never: never = a;
        throw new Error(`unhandled action ${JSON.stringify(never)}`);
      }
    }
  };

  const reload = async (): Promise<void> => {
    if (!o.reread || !current) {
      o.log("SIGHUP: no --config file to re-read; nothing changed");
      return;
    }
    let next: RunConfig;
    try {
      next = await o.reread();
    } catch (err) {
      o.log(`SIGHUP: reload refused, keeping the running config: ${(err as Error).message}`);
      return;
    }
    if (machine.state !== "accepting") {
      o.log(`SIGHUP: reload dropped, the process is ${machine.state}`);
      return;
    }
    const { changed, needRestart } = diffConfig(current, next);
    if (needRestart.length > 0) {
      o.log(`SIGHUP: reload refused, keeping the running config: ${needRestart.join(", ")} changed, which needs a restart`);
      return;
    }
    await o.apply?.(next, changed);
    current = next;
    o.log(`SIGHUP: config reloaded${changed.length > 0 ? ` (changed: ${changed.join(", ")})` : " (no option changed)"}`);
  };

  if (o.signals) for (const sig of ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] as const) o.signals.on(sig, () => handle.signal(sig));
  return handle;
}
