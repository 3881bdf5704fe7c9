/**
 * Command-line parsing: pure, no side effects, so it is tested without processes. Errors are
 * UsageError (one line; main prints it with the usage and exits 2).
 */

import { UsageError } from "../errors.ts";
import type { Address } from "../pipe/tcp.ts";
import { SCHEDULER_MODES, type SchedulerMode } from "../stripe/scheduler.ts";

/** Usage text per mode. */
export const USAGE: Record<string, string> = {
  main: `tcp-striper: stripe one TCP connection over N parallel TCP connections

usage:
  bun run src/main.ts server --listen HOST:PORT --target HOST:PORT [options]
  bun run src/main.ts client --listen HOST:PORT --peer HOST:PORT [--stripes N] [--scheduler MODE] [options]
  bun run src/main.ts relay  --listen HOST:PORT --target HOST:PORT
  bun run src/main.ts link   --listen HOST:PORT --target HOST:PORT [--rate MBPS[,MBPS...]] [--delay MS]
  bun run src/main.ts demo
  bun run src/main.ts <mode> --help

IPv6 addresses are written [::1]:PORT.`,
  server: `usage: bun run src/main.ts server --listen HOST:PORT --target HOST:PORT [options]

Accepts stripes from client proxies and connects each session to the target.
  --listen HOST:PORT      where stripes arrive
  --target HOST:PORT      the real server
  --window BYTES          receive window per session and direction (default 16777216)
  --grace MS              how long a session outlives having no stripe (default 10000)
  --keepalive MS          ping a stripe silent this long (default 1000)
  --dead-timeout MS       drop a stripe silent this long (default 5000)
  --max-sessions N        refuse sessions beyond this (default 1024)
  --max-buffer BYTES      unacknowledged bytes all sessions may hold together (default 33554432)`,
  client: `usage: bun run src/main.ts client --listen HOST:PORT --peer HOST:PORT [options]

Accepts app connections and carries each over N stripes to the server proxy.
  --listen HOST:PORT      where apps connect
  --peer HOST:PORT        the server proxy
  --stripes N             stripes per session, 1-64 (default 4)
  --scheduler MODE        rate | until-congested | round-robin (default rate)
  --window BYTES          receive window per session and direction (default 16777216)
  --grace MS              how long a session outlives having no stripe (default 10000)
  --keepalive MS          ping a stripe silent this long (default 1000)
  --dead-timeout MS       drop a stripe silent this long (default 5000)
  --max-buffer BYTES      unacknowledged bytes all sessions may hold together (default 33554432)`,
  relay: `usage: bun run src/main.ts relay --listen HOST:PORT --target HOST:PORT

Plain TCP relay with backpressure and half-close: the baseline the striped pair is measured against.`,
  link: `usage: bun run src/main.ts link --listen HOST:PORT --target HOST:PORT [--rate MBPS[,MBPS...]] [--delay MS] [--burst BYTES]

A TCP relay that simulates a route capping each TCP stream (for tests, benchmarks and the demo).
  --rate MBPS[,...]       per-connection cap in MB/s (10^6 bytes/s), each direction; a list is
                          assigned to connections in turn; 0 = uncapped (default 0)
  --delay MS              added one-way delay, each direction (default 0)
  --burst BYTES           token bucket depth (default max(16 KiB, 20 ms of the rate))`,
  demo: `usage: bun run src/main.ts demo [--cap MBPS] [--delay MS] [--stripes N] [--seconds S]

Runs, in one process on loopback: a target, a capped link (per-connection rate limit), both proxies.
Pushes data over one plain connection through the link, then striped, and prints both rates.`,
};

/** Parsed command line. */
export type Command =
  | { mode: "help"; topic: string }
  | { mode: "server"; listen: Address; target: Address; session: SessionFlags; maxSessions?: number; maxBuffer?: number }
  | { mode: "client"; listen: Address; peer: Address; stripes: number; session: SessionFlags; maxBuffer?: number }
  | { mode: "relay"; listen: Address; target: Address }
  | { mode: "link"; argv: string[] }
  | { mode: "demo"; cap: number; delayMs: number; stripes: number; seconds: number };

/** Session tunables given on the command line. */
export interface SessionFlags {
  scheduler?: SchedulerMode;
  window?: number;
  graceMs?: number;
  keepaliveMs?: number;
  deadMs?: number;
}

/** Parses HOST:PORT or [V6]:PORT. */
export function parseAddress(text: string, flag: string): Address {
  const m = /^\[([0-9a-fA-F:.%a-zA-Z]+)\]:(\d+)$/.exec(text) ?? /^([^:\[\]]+):(\d+)$/.exec(text);
  if (!m) throw new UsageError(`${flag}: expected HOST:PORT or [IPv6]:PORT, got "${text}"`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`${flag}: port out of range in "${text}"`);
  return { host: m[1]!, port };
}

function parseInt(text: string | undefined, flag: string, min: number, max: number): number {
  if (text === undefined || !/^\d+$/.test(text)) throw new UsageError(`${flag}: expected a whole number, got "${text ?? ""}"`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag}: must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** Parses a finite number in [min, max]; throws UsageError naming the flag. */
export function parseNumber(text: string | undefined, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (text === undefined || text.trim() === "" || !Number.isFinite(n)) throw new UsageError(`${flag}: expected a number, got "${text ?? ""}"`);
  if (n < min || n > max) throw new UsageError(`${flag}: must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** Splits argv after the mode into flag → value, rejecting unknown flags and missing values. */
export function flags(args: string[], allowed: readonly string[], mode: string): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) throw new UsageError(`${mode}: unexpected argument "${a}"`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!allowed.includes(name)) throw new UsageError(`${mode}: unknown option --${name}`);
    let value: string | undefined;
    if (eq > 0) value = a.slice(eq + 1);
    else {
      value = args[++i];
      if (value === undefined || value.startsWith("--")) throw new UsageError(`${mode}: --${name} needs a value`);
    }
    if (out.has(name)) throw new UsageError(`${mode}: --${name} given twice`);
    out.set(name, value);
  }
  return out;
}

function required(f: Map<string, string>, name: string, mode: string): string {
  const v = f.get(name);
  if (v === undefined) throw new UsageError(`${mode}: --${name} is required`);
  return v;
}

const SESSION_FLAGS = ["window", "grace", "keepalive", "dead-timeout"] as const;

function sessionFlags(f: Map<string, string>): SessionFlags {
  const s: SessionFlags = {};
  if (f.has("window")) s.window = parseInt(f.get("window"), "--window", 64 * 1024, 1 << 30);
  if (f.has("grace")) s.graceMs = parseInt(f.get("grace"), "--grace", 0, 3_600_000);
  if (f.has("keepalive")) s.keepaliveMs = parseInt(f.get("keepalive"), "--keepalive", 50, 600_000);
  if (f.has("dead-timeout")) s.deadMs = parseInt(f.get("dead-timeout"), "--dead-timeout", 100, 3_600_000);
  if (s.keepaliveMs !== undefined && s.deadMs !== undefined && s.deadMs <= s.keepaliveMs) {
    throw new UsageError("--dead-timeout must be longer than --keepalive");
  }
  return s;
}

/** Parses the arguments after `src/main.ts`. Throws UsageError. */
export function parseArgs(argv: string[]): Command {
  const [mode, ...rest] = argv;
  if (mode === undefined) throw new UsageError("no mode given");
  if (mode === "--help" || mode === "-h" || mode === "help") return { mode: "help", topic: "main" };
  if (rest.includes("--help") || rest.includes("-h")) {
    if (!(mode in USAGE)) throw new UsageError(`unknown mode "${mode}"`);
    return { mode: "help", topic: mode };
  }
  switch (mode) {
    case "server": {
      const f = flags(rest, ["listen", "target", "max-sessions", "max-buffer", ...SESSION_FLAGS], mode);
      const cmd: Command = {
        mode,
        listen: parseAddress(required(f, "listen", mode), "--listen"),
        target: parseAddress(required(f, "target", mode), "--target"),
        session: sessionFlags(f),
      };
      if (f.has("max-sessions")) cmd.maxSessions = parseInt(f.get("max-sessions"), "--max-sessions", 1, 1_000_000);
      if (f.has("max-buffer")) cmd.maxBuffer = parseInt(f.get("max-buffer"), "--max-buffer", 1 << 20, 2 ** 40);
      return cmd;
    }
    case "client": {
      const f = flags(rest, ["listen", "peer", "stripes", "scheduler", "max-buffer", ...SESSION_FLAGS], mode);
      const session = sessionFlags(f);
      const sched = f.get("scheduler");
      if (sched !== undefined) {
        if (!SCHEDULER_MODES.includes(sched as SchedulerMode)) {
          throw new UsageError(`--scheduler: expected one of ${SCHEDULER_MODES.join(", ")}, got "${sched}"`);
        }
        session.scheduler = sched as SchedulerMode;
      }
      return {
        mode,
        listen: parseAddress(required(f, "listen", mode), "--listen"),
        peer: parseAddress(required(f, "peer", mode), "--peer"),
        stripes: f.has("stripes") ? parseInt(f.get("stripes"), "--stripes", 1, 64) : 4,
        session,
        ...(f.has("max-buffer") ? { maxBuffer: parseInt(f.get("max-buffer"), "--max-buffer", 1 << 20, 2 ** 40) } : {}),
      };
    }
    case "relay": {
      const f = flags(rest, ["listen", "target"], mode);
      return {
        mode,
        listen: parseAddress(required(f, "listen", mode), "--listen"),
        target: parseAddress(required(f, "target", mode), "--target"),
      };
    }
    case "link":
      return { mode, argv: rest };
    case "demo": {
      const f = flags(rest, ["cap", "delay", "stripes", "seconds"], mode);
      return {
        mode,
        cap: f.has("cap") ? parseNumber(f.get("cap"), "--cap", 0.01, 10_000) : 4,
        delayMs: f.has("delay") ? parseInt(f.get("delay"), "--delay", 0, 5000) : 10,
        stripes: f.has("stripes") ? parseInt(f.get("stripes"), "--stripes", 1, 64) : 4,
        seconds: f.has("seconds") ? parseNumber(f.get("seconds"), "--seconds", 1, 600) : 4,
      };
    }
    default:
      throw new UsageError(`unknown mode "${mode}"`);
  }
}
