/**
 * Options: one declarative table (OPTIONS) from which the command-line parser, the usage text and the
 * TOML config keys (src/cli/config.ts) all come. A new option is a new row; its value then appears,
 * validated, in `RunConfig.global` (process-wide) or in every `RunConfig.listeners[i]`.
 *
 * Parsing is pure (no files, no processes) so it is tested without either. Command-line errors are
 * UsageError (main prints the line and the usage, exit 2).
 */

import { StriperError, UsageError } from "../errors.ts";
import { DEFAULT_MAX_BUFFER, DEFAULT_MAX_RECEIVE_BUFFER, DEFAULT_SESSION_OPTIONS, SESSION_LIMITS, STRIPE_COUNT } from "../config.ts";
import { DEFAULT_MAX_SESSIONS_PER_SOURCE } from "../proxy/registry.ts";
import type { Address } from "../pipe/tcp.ts";
import { cidrProblem } from "../proxy/proxyproto.ts";
import { SCHEDULER_MODES, type SchedulerMode } from "../stripe/scheduler.ts";
import { parseAllowRule } from "../proxy/allow.ts";
import {
  CLIENT_HANDSHAKE_MS,
  DEFAULT_HANDSHAKE_BURST,
  DEFAULT_HANDSHAKE_RATE,
  DEFAULT_MAX_UNAUTHENTICATED,
  HANDSHAKE_DEADLINE_MS,
} from "../proxy/handshake.ts";

/** Modes that run something. */
export const MODES = ["server", "client", "relay", "link", "demo"] as const;
/** A mode that runs something. */
export type Mode = (typeof MODES)[number];

/** How a value is written (command line and TOML) and its range. */
export type OptionKind =
  | { readonly kind: "address" } // HOST:PORT or [IPv6]:PORT
  | { readonly kind: "int"; readonly min: number; readonly max: number }
  | { readonly kind: "number"; readonly min: number; readonly max: number }
  /** Milliseconds: a whole number of ms, or with a unit (500ms, 30s, 2m, 1h). */
  | { readonly kind: "duration"; readonly min: number; readonly max: number }
  | { readonly kind: "enum"; readonly values: readonly string[] }
  /** Comma-separated numbers on the command line; an array (or one number) in TOML. */
  | { readonly kind: "numbers"; readonly min: number; readonly max: number }
  /** Boolean: present = true on the command line (no value); true/false in TOML. */
  | { readonly kind: "flag" }
  | { readonly kind: "path" }
  /** A string of a given shape (`pattern`), described by `expect` in errors; checked further where used. */
  | { readonly kind: "text"; readonly pattern: RegExp; readonly expect: string }
  /** An allowlist rule, HOST:PORTS (src/proxy/allow.ts), checked as it is read. */
  | { readonly kind: "rule" };

/**
 * Where an option lives: "process" once per process (top level of a config file); "listener" per
 * listener (top level as the default for every [[listener]], or inside one); "cli" only on the
 * command line (never a config key).
 */
export type OptionScope = "process" | "listener" | "cli";

/** One row of the option table. */
export interface OptionSpec {
  /** Flag name without `--`; also the TOML key. */
  readonly name: string;
  readonly modes: readonly Mode[];
  readonly type: OptionKind;
  /** Placeholder in the usage text (HOST:PORT, N, BYTES, MS...). */
  readonly arg?: string;
  readonly help: string;
  /** Applied when neither the file nor the command line gives a value. */
  readonly default?: OptionValue;
  /** Shown instead of `default` in the usage when the real default is computed elsewhere. */
  readonly defaultText?: string;
  readonly required?: boolean;
  readonly scope: OptionScope;
  /** May be given several times (an array in TOML). */
  readonly repeatable?: boolean;
  /** Names a listener (its address, its destination): one command-line value cannot override several. */
  readonly identity?: boolean;
  /** The SessionOptions field this option sets (see sessionFlags). */
  readonly session?: keyof SessionFlags;
  /** "live": SIGHUP may change it in a running process; otherwise a change needs a restart. */
  readonly reload?: "live";
}

/** A parsed option value. */
export type OptionValue = string | number | boolean | Address | readonly number[] | readonly string[];

const SESSION_MODES = ["server", "client"] as const;
const PROXY_MODES = ["server", "client", "relay"] as const;
const RUN_MODES = MODES;

/**
 * The option table. Rows with the same name in different modes may differ in range and default
 * (`--delay` of link and demo). Session ranges and defaults are src/config.ts's.
 */
export const OPTIONS = [
  // Command line only.
  { name: "config", modes: RUN_MODES, type: { kind: "path" }, arg: "FILE", scope: "cli", help: "read options from a TOML file (flags given here override it)" },
  { name: "check-config", modes: RUN_MODES, type: { kind: "flag" }, scope: "cli", help: "validate the options and the config file, then exit (0 valid, 2 not)" },

  // Listeners.
  { name: "listen", modes: ["server"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", required: true, identity: true, help: "where stripes arrive" },
  { name: "listen", modes: ["client"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", identity: true, help: "where apps connect (a port forward to --target); a client needs --listen, --socks, or both" },
  { name: "listen", modes: ["relay"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", required: true, identity: true, help: "where apps connect" },
  { name: "listen", modes: ["link"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", identity: true, default: { host: "127.0.0.1", port: 0 }, defaultText: "127.0.0.1:0", help: "where connections arrive" },
  { name: "target", modes: ["server"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", identity: true, help: "where sessions that name no destination go (a server needs --target, --allow, or both)" },
  { name: "allow", modes: ["server"], type: { kind: "rule" }, arg: "RULE", scope: "listener", repeatable: true, reload: "live", help: "serve client-chosen destinations matching HOST:PORTS: *, a name, *.suffix, an address or a CIDR block, with a port, list, range or *; loopback, private, link-local and the server's own addresses need a rule naming the address; re-read on SIGHUP" },
  { name: "connect-timeout", modes: ["server"], type: { kind: "duration", min: 100, max: 120_000 }, arg: "MS", scope: "listener", default: 10_000, help: "how long the server waits for a target to accept the connection" },
  { name: "target", modes: ["relay", "link"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", required: true, identity: true, help: "where connections are relayed to" },
  { name: "peer", modes: ["client"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", required: true, identity: true, help: "the server proxy" },
  { name: "target", modes: ["client"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", identity: true, defaultText: "the server's target", help: "where --listen's connections go (a port forward, ssh -L style); the server must allow it" },
  { name: "socks", modes: ["client"], type: { kind: "address" }, arg: "HOST:PORT", scope: "listener", identity: true, help: "a SOCKS5 and HTTP CONNECT proxy here: apps choose their destinations, names are resolved by the server" },
  { name: "socks-users", modes: ["client"], type: { kind: "path" }, arg: "FILE", scope: "listener", help: "require a login on --socks: user:password lines (SOCKS5 username/password, HTTP Proxy-Authorization: Basic)" },
  { name: "socks-reply", modes: ["client"], type: { kind: "enum", values: ["wait", "immediate"] }, arg: "WHEN", scope: "listener", default: "wait", help: "wait: answer the app once the server says whether the target connected (exact error codes, one round trip more); immediate: answer success at once (failures show as a reset)" },
  { name: "pool", modes: ["client"], type: { kind: "int", min: 0, max: 64 }, arg: "N", scope: "listener", default: 2, help: "standby stripes kept open and authenticated, so a new connection starts without a handshake; 0: none" },
  { name: "grow-after", modes: ["client"], type: { kind: "int", min: 0, max: 2 ** 30 }, arg: "BYTES", scope: "listener", default: 131_072, help: "a session starts on one stripe and opens the others once this many bytes have passed; 0: all stripes at once" },
  { name: "stripes", modes: ["client"], type: { kind: "int", ...STRIPE_COUNT }, arg: "N", scope: "listener", default: 4, help: "stripes per session" },
  { name: "scheduler", modes: ["client"], type: { kind: "enum", values: SCHEDULER_MODES }, arg: "MODE", scope: "listener", default: DEFAULT_SESSION_OPTIONS.scheduler, session: "scheduler", help: "how stripes are chosen for uploads (the server always sends downloads with rate)" },

  // Sessions.
  { name: "window", modes: SESSION_MODES, type: { kind: "int", ...SESSION_LIMITS.window }, arg: "BYTES", scope: "listener", default: DEFAULT_SESSION_OPTIONS.window, session: "window", help: "receive window per session and direction" },
  { name: "grace", modes: SESSION_MODES, type: { kind: "duration", ...SESSION_LIMITS.graceMs }, arg: "MS", scope: "listener", default: DEFAULT_SESSION_OPTIONS.graceMs, session: "graceMs", help: "how long a session outlives having no stripe" },
  { name: "keepalive", modes: SESSION_MODES, type: { kind: "duration", ...SESSION_LIMITS.keepaliveMs }, arg: "MS", scope: "listener", default: DEFAULT_SESSION_OPTIONS.keepaliveMs, session: "keepaliveMs", help: "ping a stripe silent this long" },
  { name: "dead-timeout", modes: SESSION_MODES, type: { kind: "duration", ...SESSION_LIMITS.deadMs }, arg: "MS", scope: "listener", default: DEFAULT_SESSION_OPTIONS.deadMs, session: "deadMs", help: "drop a stripe silent this long" },
  // Keys (docs/protocol.md §3.2). No --key: a key on the command line would show in `ps`.
  { name: "key-file", modes: SESSION_MODES, type: { kind: "path" }, arg: "PATH", scope: "listener", defaultText: "$STRIPER_KEY", reload: "live", help: "the pre-shared key(s), one per line: the server accepts any, the client uses the first; make one with `tcp-striper keygen`; re-read on SIGHUP" },
  { name: "no-auth", modes: SESSION_MODES, type: { kind: "flag" }, scope: "listener", help: "no key: stripes neither authenticated nor encrypted (benchmarks and trusted networks only)" },
  { name: "handshake-timeout", modes: ["server"], type: { kind: "duration", min: 100, max: HANDSHAKE_DEADLINE_MS }, arg: "MS", scope: "listener", default: HANDSHAKE_DEADLINE_MS, help: "a stripe's first message must arrive within this of the accept; a connection that fails any check is held silent until then" },
  { name: "handshake-timeout", modes: ["client"], type: { kind: "duration", min: 100, max: HANDSHAKE_DEADLINE_MS }, arg: "MS", scope: "listener", default: CLIENT_HANDSHAKE_MS, help: "how long a stripe waits for the server's authenticated reply" },
  // Process-wide limits: today each listener is its own proxy and applies them separately.
  { name: "max-unauthenticated", modes: ["server"], type: { kind: "int", min: 1, max: 1_000_000 }, arg: "N", scope: "process", default: DEFAULT_MAX_UNAUTHENTICATED, help: "connections that have not authenticated yet; when full, the oldest waiting ≥ 1 s makes room" },
  { name: "handshake-rate", modes: ["server"], type: { kind: "number", min: 0.01, max: 1_000_000 }, arg: "N", scope: "process", default: DEFAULT_HANDSHAKE_RATE, help: "handshake attempts per second per source address (IPv6: per /64); refunded when one authenticates" },
  { name: "handshake-burst", modes: ["server"], type: { kind: "int", min: 1, max: 1_000_000 }, arg: "N", scope: "process", default: DEFAULT_HANDSHAKE_BURST, help: "handshake attempts a quiet source may make at once" },
  { name: "max-standby", modes: ["server"], type: { kind: "int", min: 0, max: 1_000_000 }, arg: "N", scope: "process", default: 256, help: "standby stripes (opened ahead of need by clients' pools) held at once; 16 per source at most, each for at most 60 s" },
  { name: "max-sessions", modes: ["server"], type: { kind: "int", min: 1, max: 1_000_000 }, arg: "N", scope: "process", default: 1024, help: "refuse sessions beyond this (per worker process with --workers)" },
  // Scaling (issue 14): worker processes on one port, join ports, load balancers in front.
  { name: "workers", modes: ["server"], type: { kind: "int", min: 1, max: 64 }, arg: "N", scope: "process", defaultText: "the number of cores", help: "worker processes sharing the listening port (SO_REUSEPORT); every stripe of a session is handled by the worker holding it; 1: one process" },
  { name: "join-ports", modes: ["server"], type: { kind: "text", pattern: /^(0|\d{1,5}-\d{1,5})$/, expect: "FIRST-LAST (worker k listens on FIRST + k) or 0 (any free port)" }, arg: "FIRST-LAST", scope: "listener", defaultText: "the listen port + 1 + worker", help: "with --workers above 1: each worker's own port for the stripes of its sessions, told to clients in the reply that opens a session" },
  { name: "advertise-join", modes: ["server"], type: { kind: "enum", values: ["on", "off"] }, arg: "on|off", scope: "listener", default: "on", help: "tell clients the join port; off behind a load balancer, whose clients must not bypass it (their stripes then find the worker through wrong-worker answers)" },
  { name: "proxy-protocol-from", modes: ["server"], type: { kind: "text", pattern: /^[0-9a-fA-F:.]+(\/\d{1,3})?$/, expect: "an IPv4 or IPv6 address or CIDR block" }, arg: "CIDR", scope: "listener", repeatable: true, help: "a load balancer: its connections must open with a PROXY protocol v2 header (HAProxy send-proxy-v2), whose client address counts for logs and limits; anyone else's header is refused like garbage" },
  { name: "max-buffer", modes: SESSION_MODES, type: { kind: "int", min: 1 << 20, max: 2 ** 40 }, arg: "BYTES", scope: "process", default: DEFAULT_MAX_BUFFER, help: "unacknowledged bytes all sessions may hold together beyond each one's guaranteed 256 KiB; a session whose far side stops acknowledging is set apart (a server's workers each have this much)" },
  // Issue 10: what one peer can hold (README "Limits").
  { name: "max-sessions-per-source", modes: ["server"], type: { kind: "int", min: 1, max: 1_000_000 }, arg: "N", scope: "process", default: DEFAULT_MAX_SESSIONS_PER_SOURCE, help: "sessions one source address (IPv6: one /64) may hold at once; more OPENs are refused (E_SOURCE_LIMIT)" },
  { name: "max-stripes-per-source", modes: ["server"], type: { kind: "int", min: 1, max: 10_000_000 }, arg: "N", scope: "process", defaultText: "half the accepted-connection limit", help: "authenticated stripe connections one source address (IPv6: one /64) may hold at once; more are refused (E_SOURCE_LIMIT)" },
  { name: "max-receive-buffer", modes: SESSION_MODES, type: { kind: "int", min: 1 << 20, max: 2 ** 40 }, arg: "BYTES", scope: "process", default: DEFAULT_MAX_RECEIVE_BUFFER, help: "memory all reorder buffers may use together: receive windows are granted against it and shrink under load; a session for which not even 64 KiB fits is refused (E_RECEIVE_MEMORY)" },
  { name: "max-connections", modes: SESSION_MODES, type: { kind: "int", min: 1, max: 10_000_000 }, arg: "N", scope: "process", defaultText: "the descriptor limit less a reserve", help: "connections accepted at once; beyond, new ones are reset until the count falls 5 % below; never above what the descriptor limit allows" },

  // Operations.
  { name: "metrics", modes: SESSION_MODES, type: { kind: "address" }, arg: "HOST:PORT", scope: "process", help: "serve /metrics, /healthz, /api/sessions and the dashboard here (off by default)" },
  { name: "log-format", modes: ["server", "client", "relay", "link"], type: { kind: "enum", values: ["text", "json"] }, arg: "FORMAT", scope: "process", default: "text", help: "log lines as text, or as JSON objects one per line (ts, level, event, session, remote, msg, fields) for journald and log shippers" },
  { name: "drain-timeout", modes: PROXY_MODES, type: { kind: "duration", min: 0, max: 86_400_000 }, arg: "MS", scope: "process", default: 30_000, help: "on SIGTERM/SIGINT, how long live sessions may go on before they are reset" },

  // link: a capped route for tests and benchmarks.
  { name: "rate", modes: ["link"], type: { kind: "numbers", min: 0, max: Infinity }, arg: "MBPS[,MBPS...]", scope: "listener", defaultText: "0", help: "per-connection cap in MB/s (10^6 bytes/s), each direction; a list is assigned to connections in turn; 0 = uncapped" },
  { name: "delay", modes: ["link"], type: { kind: "number", min: 0, max: Infinity }, arg: "MS", scope: "listener", defaultText: "0", help: "added one-way delay, each direction" },
  { name: "connect-delay", modes: ["link"], type: { kind: "number", min: 0, max: 60_000 }, arg: "MS", scope: "listener", defaultText: "0", help: "hold each new connection this long before forwarding it: the round trip a TCP handshake costs on the route the link stands for (e.g. 2 × --delay)" },
  { name: "burst", modes: ["link"], type: { kind: "number", min: 1, max: Infinity }, arg: "BYTES", scope: "listener", defaultText: "max(16 KiB, 20 ms of the rate)", help: "token bucket depth" },

  // demo.
  { name: "cap", modes: ["demo"], type: { kind: "number", min: 0.01, max: 10_000 }, arg: "MBPS", scope: "process", default: 4, help: "per-connection cap of the link in MB/s" },
  { name: "delay", modes: ["demo"], type: { kind: "int", min: 0, max: 5000 }, arg: "MS", scope: "process", default: 10, help: "one-way delay of the link" },
  { name: "stripes", modes: ["demo"], type: { kind: "int", ...STRIPE_COUNT }, arg: "N", scope: "process", default: 4, help: "stripes of the striped run" },
  { name: "seconds", modes: ["demo"], type: { kind: "number", min: 1, max: 600 }, arg: "S", scope: "process", default: 4, help: "length of each run" },
] as const satisfies readonly OptionSpec[];

type Row = (typeof OPTIONS)[number];
/** Every option name in the table. */
export type OptionName = Row["name"];
type KindValue<K> = K extends "address"
  ? Address
  : K extends "int" | "number" | "duration"
    ? number
    : K extends "flag"
      ? boolean
      : K extends "numbers"
        ? readonly number[]
        : string;
type RowValue<R> = R extends { type: { kind: infer K }; repeatable: true }
  ? readonly KindValue<K>[]
  : R extends { type: { kind: infer K } }
    ? KindValue<K>
    : never;
/** Validated values by option name (absent: not given and no default). */
export type Values = { -readonly [N in OptionName]?: RowValue<Extract<Row, { name: N }>> };

/** The table as plain specs (for generic code). */
export const OPTION_SPECS: readonly OptionSpec[] = OPTIONS;

/** The row for `name` in `mode`, if that mode has the option. */
export function optionFor(mode: Mode, name: string): OptionSpec | undefined {
  return OPTION_SPECS.find((o) => o.name === name && o.modes.includes(mode));
}

/** Every row of `mode`, in table order. */
export function optionsOf(mode: Mode): OptionSpec[] {
  return OPTION_SPECS.filter((o) => o.modes.includes(mode));
}

// --- values: parsing and formatting -----------------------------------------------------------------

/** Parses HOST:PORT or [V6]:PORT. */
export function parseAddress(text: string, flag: string): Address {
  const m = /^\[([0-9a-fA-F:.%a-zA-Z]+)\]:(\d+)$/.exec(text) ?? /^([^:\[\]]+):(\d+)$/.exec(text);
  if (!m) throw new UsageError(`${flag}: expected HOST:PORT or [IPv6]:PORT, got "${text}"`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`${flag}: port out of range in "${text}"`);
  return { host: m[1]!, port };
}

/** "between 1 and 64", "at least 0" (an unbounded range does not print Infinity). */
export function describeRange(min: number, max: number): string {
  if (max === Infinity) return `at least ${min}`;
  return `between ${min} and ${max}`;
}

function checkRange(n: number, flag: string, min: number, max: number): number {
  if (n < min || n > max) throw new UsageError(`${flag}: must be ${describeRange(min, max)}, got ${n}`);
  return n;
}

/** Parses a whole number in [min, max]; throws UsageError naming the flag. */
export function parseInteger(text: string | undefined, flag: string, min: number, max: number): number {
  if (text === undefined || !/^\d+$/.test(text)) throw new UsageError(`${flag}: expected a whole number, got "${text ?? ""}"`);
  return checkRange(Number(text), flag, min, max);
}

/** Parses a finite number in [min, max]; throws UsageError naming the flag. */
export function parseNumber(text: string | undefined, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (text === undefined || text.trim() === "" || !Number.isFinite(n)) throw new UsageError(`${flag}: expected a number, got "${text ?? ""}"`);
  return checkRange(n, flag, min, max);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a duration in ms: "1500", "1500ms", "30s", "2m", "1h" (whole ms after conversion). */
export function parseDuration(text: string, flag: string, min: number, max: number): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag}: expected milliseconds or a duration like 30s, 500ms, 2m, got "${text}"`);
  const ms = Number(m[1]) * DURATION_UNITS[m[2] ?? "ms"]!;
  if (!Number.isInteger(ms)) throw new UsageError(`${flag}: must be a whole number of milliseconds, got ${ms}`);
  return checkRange(ms, flag, min, max);
}

/** Parses one command-line value for `spec`; `flag` names it in errors ("--window"). */
export function parseValue(spec: OptionSpec, text: string, flag: string): OptionValue {
  const t = spec.type;
  switch (t.kind) {
    case "address":
      return parseAddress(text, flag);
    case "int":
      return parseInteger(text, flag, t.min, t.max);
    case "number":
      return parseNumber(text, flag, t.min, t.max);
    case "duration":
      return parseDuration(text, flag, t.min, t.max);
    case "enum":
      if (!t.values.includes(text)) throw new UsageError(`${flag}: expected one of ${t.values.join(", ")}, got "${text}"`);
      return text;
    case "numbers":
      return text.split(",").map((x) => parseNumber(x, flag, t.min, t.max));
    case "flag":
      if (text === "true") return true;
      if (text === "false") return false;
      throw new UsageError(`${flag}: expected true or false, got "${text}"`);
    case "path":
      if (text === "") throw new UsageError(`${flag}: expected a file name`);
      return text;
    case "text":
      if (!t.pattern.test(text)) throw new UsageError(`${flag}: expected ${t.expect}, got "${text}"`);
      return text;
    case "rule":
      try {
        return parseAllowRule(text).text;
      } catch (err) {
        throw new UsageError(`${flag}: ${(err as Error).message.replace(/^--allow /, "")}`);
      }
    default: {
      const never: never = t;
      throw new Error(`unhandled option kind ${JSON.stringify(never)}`);
    }
  }
}

/** Writes a value back as the command line takes it (parseValue(formatValue(v)) equals v). */
export function formatValue(spec: OptionSpec, v: OptionValue): string {
  const t = spec.type;
  switch (t.kind) {
    case "address": {
      const a = v as Address;
      return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
    }
    case "numbers":
      return (v as readonly number[]).join(",");
    case "int":
    case "number":
    case "duration":
    case "enum":
    case "flag":
    case "path":
    case "text":
    case "rule":
      return String(v);
    default: {
      const never: never = t;
      throw new Error(`unhandled option kind ${JSON.stringify(never)}`);
    }
  }
}

// --- the command line --------------------------------------------------------------------------------

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

/** The command line before a config file is read: a mode (maybe from the file) and raw flag texts. */
export type CommandLine =
  | { kind: "help"; topic: string }
  | { kind: "version" }
  | { kind: "keygen" }
  | {
      kind: "run";
      /** Undefined when only the config file names it (`tcp-striper --config FILE`). */
      mode: Mode | undefined;
      /** Flag texts by name, in the order given (repeatable options keep every occurrence). */
      flags: Map<string, string[]>;
      configPath: string | undefined;
      check: boolean;
    };

const isMode = (s: string): s is Mode => (MODES as readonly string[]).includes(s);

/** Splits argv into mode and flags; checks only names and shapes (values are checked by `resolve`). */
export function parseCommandLine(argv: string[]): CommandLine {
  const first = argv[0];
  if (first === undefined) throw new UsageError("no mode given");
  if (first === "--help" || first === "-h" || first === "help") return { kind: "help", topic: "main" };
  if (argv.includes("--version") || first === "version") return { kind: "version" };
  if (first === "keygen") {
    if (argv.includes("--help") || argv.includes("-h")) return { kind: "help", topic: "keygen" };
    if (argv.length > 1) throw new UsageError(`keygen: takes no options, got "${argv[1]}"`);
    return { kind: "keygen" };
  }
  const mode = first.startsWith("--") ? undefined : first;
  if (mode !== undefined && !isMode(mode)) throw new UsageError(`unknown mode "${mode}"`);
  const rest = mode === undefined ? argv : argv.slice(1);
  if (rest.includes("--help") || rest.includes("-h")) return { kind: "help", topic: mode ?? "main" };
  const label = mode ?? "tcp-striper";
  const out = new Map<string, string[]>();
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith("--")) throw new UsageError(`${label}: unexpected argument "${a}"`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    const spec = mode ? optionFor(mode, name) : OPTION_SPECS.find((o) => o.name === name);
    if (!spec) {
      const elsewhere = OPTION_SPECS.filter((o) => o.name === name).flatMap((o) => o.modes);
      const hint = elsewhere.length > 0 ? ` (an option of ${[...new Set(elsewhere)].join(", ")})` : "";
      throw new UsageError(`${label}: unknown option --${name}${hint}`);
    }
    let value: string;
    if (eq > 0) value = a.slice(eq + 1);
    else if (spec.type.kind === "flag") value = "true";
    else {
      const next = rest[++i];
      if (next === undefined || next.startsWith("--")) throw new UsageError(`${label}: --${name} needs a value`);
      value = next;
    }
    const seen = out.get(name);
    if (seen && !spec.repeatable) throw new UsageError(`${label}: --${name} given twice`);
    if (seen) seen.push(value);
    else out.set(name, [value]);
  }
  const configText = out.get("config")?.[0];
  const configPath = configText === undefined ? undefined : (parseValue(OPTION_SPECS.find((o) => o.name === "config")!, configText, "--config") as string);
  const checkText = out.get("check-config")?.[0];
  const check = checkText !== undefined && parseValue(OPTION_SPECS.find((o) => o.name === "check-config")!, checkText, "--check-config") === true;
  out.delete("config");
  out.delete("check-config");
  if (mode === undefined && configPath === undefined) throw new UsageError("no mode given");
  return { kind: "run", mode, flags: out, configPath, check };
}

// --- resolved configuration -------------------------------------------------------------------------

/** Everything a run needs: the mode, process-wide values, and one value set per listener. */
export interface RunConfig {
  mode: Mode;
  /** --check-config: validate and exit. */
  check: boolean;
  /** The config file, when one was given (re-read on SIGHUP). */
  configPath: string | undefined;
  /** Process-wide options, defaults applied. */
  global: Values;
  /** One per listener: listener-scope options, defaults applied. At least one. */
  listeners: Values[];
}

/** Parsed command line. */
export type Command = { mode: "help"; topic: string } | { mode: "version" } | { mode: "keygen" } | RunConfig;

/** Session tunables (the SessionOptions fields the table sets). */
export interface SessionFlags {
  scheduler?: SchedulerMode;
  window?: number;
  graceMs?: number;
  keepaliveMs?: number;
  deadMs?: number;
}

/** The SessionOptions fields a listener's values set (rows with a `session` column). */
export function sessionFlags(v: Values): SessionFlags {
  const out: Record<string, unknown> = {};
  for (const o of OPTION_SPECS) {
    if (o.session !== undefined && (v as Record<string, unknown>)[o.name] !== undefined) out[o.session] = (v as Record<string, unknown>)[o.name];
  }
  return out as SessionFlags;
}

/**
 * A config file's problem: one line naming the file, the line where known, and the key. Exit 2.
 * (errors.ts's ConfigError is a library caller's bad session option.)
 */
export class ConfigFileError extends StriperError {
  constructor(message: string) {
    super("E_CONFIG_FILE", message);
    this.name = "ConfigFileError";
  }
}

/** What config.ts read from a file, ready to merge. */
export interface FileValues {
  /** Top-level keys: process options, and listener options as defaults for every listener. */
  top: Values;
  /** One per [[listener]] table (empty: the top level is the only listener). */
  listeners: Values[];
  /** "FILE:LINE: KEY" (or "FILE: KEY" when the line is unknown); `listener` indexes `listeners`. */
  where(listener: number | undefined, key: string): string;
}

/** A cross-option rule on one listener's merged values: the offending option and why, or undefined. */
type Check = (v: Values, mode: Mode) => { name: OptionName; message: string } | undefined;

const CHECKS: readonly Check[] = [
  (v, mode) =>
    mode === "server" && v.target === undefined && (v.allow === undefined || v.allow.length === 0)
      ? { name: "target", message: "a server needs a target (--target), an allowlist (--allow), or both" }
      : undefined,
  (v, mode) =>
    mode === "client" && v.listen === undefined && v.socks === undefined
      ? { name: "listen", message: "a client needs --listen (a port forward), --socks, or both" }
      : undefined,
  (v, mode) =>
    mode === "client" && v.target !== undefined && v.listen === undefined
      ? { name: "target", message: "--target is where --listen's connections go: give --listen too" }
      : undefined,
  (v) =>
    v["no-auth"] === true && v["key-file"] !== undefined
      ? { name: "no-auth", message: "--no-auth and --key-file exclude each other: choose one" }
      : undefined,
  (v) => {
    const bad = (v["proxy-protocol-from"] ?? []).map(cidrProblem).find((p) => p !== undefined);
    return bad === undefined ? undefined : { name: "proxy-protocol-from", message: bad };
  },
  (v) => {
    const m = /^(\d+)-(\d+)$/.exec(v["join-ports"] ?? "");
    if (m === null) return undefined;
    const [lo, hi] = [Number(m[1]), Number(m[2])];
    return lo < 1 || hi > 65535 || hi < lo ? { name: "join-ports", message: `must be FIRST-LAST with 1 ≤ FIRST ≤ LAST ≤ 65535, got ${lo}-${hi}` } : undefined;
  },
  (v) =>
    v.keepalive !== undefined && v["dead-timeout"] !== undefined && v["dead-timeout"] <= v.keepalive
      ? { name: "dead-timeout", message: `must be longer than keepalive (${v.keepalive} ms), got ${v["dead-timeout"]} ms` }
      : undefined,
];

const get = (v: Values, name: string): OptionValue | undefined => (v as Record<string, OptionValue | undefined>)[name];

/**
 * Merges defaults, config-file values and command-line values (in that order of precedence, lowest
 * first) into a RunConfig. Throws UsageError for command-line problems, ConfigFileError for the file's.
 */
export function mergeConfig(mode: Mode, cli: Values, file: FileValues | undefined, cmd: { check: boolean; configPath: string | undefined }): RunConfig {
  const rows = optionsOf(mode).filter((o) => o.scope !== "cli");
  const pick = (v: Values | undefined, scope: OptionScope, defaults = false): Values => {
    const out: Record<string, OptionValue> = {};
    for (const o of rows) {
      const x = defaults ? o.default : v && get(v, o.name);
      if (o.scope === scope && x !== undefined) out[o.name] = x;
    }
    return out as Values;
  };
  const global: Values = { ...pick(undefined, "process", true), ...pick(file?.top, "process"), ...pick(cli, "process") };
  const cliListener = pick(cli, "listener");
  const fileListeners = file && file.listeners.length > 0 ? file.listeners : [{}];
  if (file && fileListeners.length > 1) {
    if (mode === "link") throw new ConfigFileError(`${file.where(undefined, "listener")}: link mode runs one listener, the file has ${fileListeners.length}`);
    for (const o of rows) {
      if (o.identity && get(cliListener, o.name) !== undefined) {
        throw new UsageError(`--${o.name}: the config file has ${fileListeners.length} listeners; change their ${o.name} in the file`);
      }
    }
  }
  const listeners = fileListeners.map((l) => ({ ...pick(undefined, "listener", true), ...pick(file?.top, "listener"), ...l, ...cliListener }));
  listeners.forEach((l, i) => {
    const index = file && file.listeners.length > 0 ? i : undefined;
    const label = (name: string): string => (!file || get(cliListener, name) !== undefined ? `--${name}` : file.where(index, name));
    for (const o of rows) {
      if (o.scope !== "listener" || !o.required || get(l, o.name) !== undefined) continue;
      if (!file) throw new UsageError(`${mode}: --${o.name} is required`);
      throw new ConfigFileError(`${file.where(index, o.name)}: required for ${mode} mode (in the file or as --${o.name})`);
    }
    for (const check of CHECKS) {
      const bad = check(l, mode);
      if (bad === undefined) continue;
      const text = `${label(bad.name)}: ${bad.message}`;
      throw file && get(cliListener, bad.name) === undefined ? new ConfigFileError(text) : new UsageError(text);
    }
  });
  return { mode, check: cmd.check, configPath: cmd.configPath, global, listeners };
}

/** Validates the command-line flags of `mode` into values (UsageError naming the flag). */
export function cliValues(mode: Mode, raw: Map<string, string[]>): Values {
  const out: Record<string, unknown> = {};
  for (const [name, texts] of raw) {
    const spec = optionFor(mode, name);
    if (!spec) throw new UsageError(`${mode}: unknown option --${name}`);
    const parsed = texts.map((t) => parseValue(spec, t, `--${name}`));
    out[name] = spec.repeatable ? parsed : parsed[0];
  }
  return out as Values;
}

/**
 * Parses a command line that names no config file (pure; tests and the common case). With
 * `--config`, use config.ts's `loadCommand`, which reads the file.
 */
export function parseArgs(argv: string[]): Command {
  const cl = parseCommandLine(argv);
  if (cl.kind === "help") return { mode: "help", topic: cl.topic };
  if (cl.kind === "version") return { mode: "version" };
  if (cl.kind === "keygen") return { mode: "keygen" };
  if (cl.configPath !== undefined || cl.mode === undefined) throw new UsageError("--config needs the file to be read: use loadCommand");
  return mergeConfig(cl.mode, cliValues(cl.mode, cl.flags), undefined, cl);
}

/** Renders values back into command-line flags for `mode` (round-trips through parseArgs). */
export function toArgv(mode: Mode, v: Values): string[] {
  const out: string[] = [];
  for (const o of optionsOf(mode)) {
    const value = (v as Record<string, OptionValue | undefined>)[o.name];
    if (value === undefined || o.scope === "cli") continue;
    const all = o.repeatable ? (value as readonly OptionValue[]) : [value];
    for (const x of all) {
      if (o.type.kind === "flag") {
        if (x === true) out.push(`--${o.name}`);
      } else out.push(`--${o.name}`, formatValue(o, x));
    }
  }
  return out;
}

// --- usage ------------------------------------------------------------------------------------------

/** What each mode does, for its usage text. */
const ABOUT: Record<Mode, string> = {
  server: "Accepts stripes from client proxies and connects each session to its target, or to the\ndestination the client chose when an --allow rule allows it.",
  client: "Accepts app connections (a port forward with --listen, SOCKS5 / HTTP CONNECT with --socks)\nand carries each over N stripes to the server proxy.",
  relay: "Plain TCP relay with backpressure and half-close: the baseline the striped pair is measured against.",
  link: "A TCP relay that simulates a route capping each TCP stream (for tests, benchmarks and the demo).",
  demo:
    "Runs, in one process on loopback: a target, a capped link (per-connection rate limit), both proxies.\n" +
    "Pushes data over one plain connection through the link, then striped, and prints both rates.",
};

function typeHint(o: OptionSpec): string {
  const t = o.type;
  switch (t.kind) {
    case "enum":
      return t.values.join(" | ");
    case "int":
    case "number":
    case "numbers":
      return t.max === Infinity ? "" : `${t.min}-${t.max}`;
    case "address":
    case "duration":
    case "flag":
    case "path":
    case "text":
    case "rule":
      return "";
    default: {
      const never: never = t;
      throw new Error(`unhandled option kind ${JSON.stringify(never)}`);
    }
  }
}

const HELP_COLUMN = 26;
const HELP_WIDTH = 100;

/** Wraps `text` to lines of at most `width` characters (words are never split). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines;
}

function optionLine(o: OptionSpec): string {
  const left = `  --${o.name}${o.arg ? ` ${o.arg}` : ""}`;
  const hint = typeHint(o);
  const def = o.defaultText ?? (o.default !== undefined ? formatValue(o, o.default) : undefined);
  const extra = [hint, def !== undefined ? `default ${def}` : "", o.repeatable ? "repeatable" : ""].filter((s) => s !== "").join(", ");
  const body = wrap(`${o.help}${extra ? ` (${extra})` : ""}`, HELP_WIDTH - HELP_COLUMN);
  const pad = "".padEnd(HELP_COLUMN);
  const first = left.length < HELP_COLUMN ? [`${left.padEnd(HELP_COLUMN)}${body[0]}`] : [left, `${pad}${body[0]}`];
  return [...first, ...body.slice(1).map((l) => `${pad}${l}`)].join("\n");
}

function modeUsage(mode: Mode): string {
  const rows = optionsOf(mode);
  const req = rows.filter((o) => o.required).map((o) => `--${o.name} ${o.arg}`);
  const lines = [`usage: tcp-striper ${mode} ${[...req, "[options]"].join(" ")}`, "", ABOUT[mode]];
  for (const o of rows.filter((r) => r.scope !== "cli")) lines.push(optionLine(o));
  lines.push(...rows.filter((r) => r.scope === "cli").map(optionLine));
  if (rows.some((r) => r.type.kind === "duration")) lines.push("Durations (MS) also take a unit: 500ms, 30s, 2m.");
  lines.push("Every option except --config and --check-config is also a key of the config file.");
  return lines.join("\n");
}

const MAIN_USAGE = `tcp-striper: stripe one TCP connection over N parallel TCP connections

usage:
  tcp-striper server --listen HOST:PORT (--target HOST:PORT | --allow RULE...) [options]
  tcp-striper client --listen HOST:PORT [--target HOST:PORT] --peer HOST:PORT [options]
  tcp-striper client --socks HOST:PORT --peer HOST:PORT [--socks-users FILE] [options]
  tcp-striper relay  --listen HOST:PORT --target HOST:PORT
  tcp-striper link   --listen HOST:PORT --target HOST:PORT [--rate MBPS[,MBPS...]] [--delay MS]
  tcp-striper demo
  tcp-striper keygen > key && chmod 600 key
  tcp-striper [<mode>] --config FILE [--check-config]
  tcp-striper <mode> --help
  tcp-striper --version

server and client need a key (--key-file key, or the key in STRIPER_KEY); --no-auth runs without one.
From a checkout, "tcp-striper" is "npm exec -- tcp-striper" (or dist/tcp-striper after npm run build).
IPv6 addresses are written [::1]:PORT.`;

/** Usage text per mode, built from the option table. */
export const USAGE: Record<string, string> = {
  main: MAIN_USAGE,
  ...Object.fromEntries(MODES.map((m) => [m, modeUsage(m)])),
  keygen: `usage: tcp-striper keygen

Prints a new pre-shared key: 32 random bytes in base64 (44 characters) and a newline.
Save it where only its owner can read it, and give server and client the same file:
  tcp-striper keygen > key && chmod 600 key
A key file may hold several keys, one per line: the server accepts any, the client uses the first.
To rotate: add the new key to the servers' files, put it first in the clients', then remove the old one.`,
};
