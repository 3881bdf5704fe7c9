/**
 * Logs: one line per event on stderr, as text (the default, today's line shapes) or JSON lines.
 *
 * Anything a peer sends can end up in a line (a RESET reason, an address), so every line is made safe
 * where it is written: control characters (C0, DEL, C1), bidi and invisible format characters, line
 * separators and lone surrogates become visible escapes (text) or \u escapes (JSON), and lengths are
 * bounded. A peer's newline and ANSI escapes once forged a whole fake "session … end … reason ok" line.
 *
 * LogAggregator turns repeated events of one kind into one line per interval ("312 stripes from
 * 203.0.113.7 dropped in the last 10 s: E_HANDSHAKE_TIMEOUT") with bounded memory: 20,000 lines in 7.7 s
 * from connect-and-reset connections were measured before.
 */

import type { StriperError } from "../errors.ts";
import type { SessionMetrics } from "../pipe/striped.ts";

// --- escaping -------------------------------------------------------------------------------------------

/** Longest peer-supplied text kept in a line (longer is cut and marked). */
export const MAX_FIELD = 200;
/** Longest line written (a last resort: fields are bounded before). */
export const MAX_LINE = 4096;

// C0, DEL, C1, the backslash (so escapes stay unambiguous), ALM, zero-width and bidi marks, line and
// paragraph separators, bidi embeddings/overrides/isolates, invisible operators, BOM, lone surrogates.
const UNSAFE_TEXT = /[\u0000-\u001f\u007f-\u009f\\\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]/gu;
// The same minus what JSON.stringify already escapes (C0, quote, backslash, lone surrogates).
const UNSAFE_JSON = /[\u007f-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/gu;

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\" };

function hex(c: string, width: number): string {
  return c.charCodeAt(0).toString(16).padStart(width, "0");
}

/** Cuts `s` to `max` UTF-16 units (never inside a surrogate pair), marking how much was cut. */
export function bound(s: string, max = MAX_FIELD): string {
  if (s.length <= max) return s;
  let end = max;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${s.slice(0, end)}…[+${s.length - end}]`;
}

/**
 * Makes text safe for a text log line: bounded to `max`, and every control, bidi or invisible format
 * character (and the backslash) written as a visible escape (\n, \x1b, \u202e).
 */
export function escapeText(s: string, max = MAX_FIELD): string {
  return bound(s, max).replace(UNSAFE_TEXT, (c) => NAMED[c] ?? (c.charCodeAt(0) <= 0xff ? `\\x${hex(c, 2)}` : `\\u${hex(c, 4)}`));
}

/** JSON.stringify, plus \u escapes for the characters it leaves raw that a terminal would act on. */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE_JSON, (c) => `\\u${hex(c, 4)}`);
}

// --- addresses ------------------------------------------------------------------------------------------

/**
 * The host part of a remote address for logs and per-source keys: IPv4-mapped IPv6 (::ffff:1.2.3.4)
 * as plain IPv4, "unknown" when the socket could not say (the peer was already gone), bounded.
 */
export function remoteHost(host: string | undefined | null): string {
  if (!host) return "unknown";
  const h = host.toLowerCase().startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
  return escapeText(h, 64);
}

/** The host part of a remote address as formatRemote or formatAddress wrote it ("[v6]:port", "v4:port"). */
export function hostOfRemote(remote: string): string {
  const m = /^\[(.*)\]:\d*$/.exec(remote) ?? /^([^:]*):\d*$/.exec(remote);
  return remoteHost(m ? m[1] : remote);
}

/** Formats a remote address for logs: "203.0.113.7:443", "[2001:db8::1]:443", "unknown:443". */
export function formatRemote(host: string | undefined | null, port?: number | null): string {
  const h = remoteHost(host);
  const shown = h.includes(":") ? `[${h}]` : h;
  return port === undefined || port === null ? shown : `${shown}:${port}`;
}

// --- sinks and the structured logger ----------------------------------------------------------------

/**
 * Where log lines go. A plain function takes text lines; a Logger's sink also has `emit`, which takes
 * structured events (logEvent() uses it when there, so `--log-format json` gets the fields).
 */
export type LogSink = ((line: string) => void) & { readonly emit?: (ev: LogEvent) => void };

/** Severity of a structured event. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Output format of the logger (`--log-format`). */
export type LogFormat = "text" | "json";

/** One structured event. `msg` is the text line (today's shape); the rest is for JSON consumers. */
export interface LogEvent {
  level?: LogLevel;
  /** Stable event name, e.g. "session.end", "stripe.dropped", "log" for plain lines. */
  event: string;
  msg: string;
  /** Short session id. */
  session?: string;
  /** Remote address, formatted with formatRemote. */
  remote?: string;
  fields?: Record<string, string | number | boolean | undefined>;
}

/** The text form: "ISO-time msg", msg escaped. */
export function renderText(ev: LogEvent, ts: Date): string {
  return `${ts.toISOString()} ${escapeText(ev.msg, MAX_LINE)}`;
}

/** The JSON-lines form: {"ts","level","event","session","remote","msg","fields"}, strings bounded. */
export function renderJson(ev: LogEvent, ts: Date): string {
  const out: Record<string, unknown> = { ts: ts.toISOString(), level: ev.level ?? "info", event: bound(ev.event, 64) };
  if (ev.session !== undefined) out.session = bound(ev.session, 64);
  if (ev.remote !== undefined) out.remote = bound(ev.remote, 80);
  out.msg = bound(ev.msg, MAX_LINE);
  if (ev.fields) {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(ev.fields)) {
      if (v !== undefined) fields[bound(k, 64)] = typeof v === "string" ? bound(v, MAX_FIELD) : v;
    }
    out.fields = fields;
  }
  return safeJson(out);
}

/** Options of a Logger. */
export interface LoggerOptions {
  format?: LogFormat;
  /** Where finished lines go, without the newline (default: stderr). */
  write?: (line: string) => void;
  /** Wall clock in ms for timestamps (default Date.now). */
  now?: () => number;
}

/** Writes events as text or JSON lines; `sink` takes plain lines for code not yet structured. */
export class Logger {
  readonly format: LogFormat;
  private readonly write: (line: string) => void;
  private readonly now: () => number;

  constructor(opts: LoggerOptions = {}) {
    this.format = opts.format ?? "text";
    this.write = opts.write ?? ((line) => process.stderr.write(`${line}\n`));
    this.now = opts.now ?? Date.now;
  }

  /** Writes one event. */
  emit(ev: LogEvent): void {
    const ts = new Date(this.now());
    this.write(this.format === "json" ? renderJson(ev, ts) : renderText(ev, ts));
  }

  /** A LogSink: each plain line becomes an "info" event named "log"; `sink.emit` takes structured events. */
  readonly sink: LogSink = Object.assign((line: string) => this.emit({ event: "log", msg: line }), { emit: (ev: LogEvent) => this.emit(ev) });
}

/** Logs `ev` through `sink`: as a structured event when the sink takes them, else as its text line. */
export function logEvent(sink: LogSink, ev: LogEvent): void {
  if (sink.emit) sink.emit(ev);
  else sink(ev.msg);
}

const stderrLogger = new Logger();

/** Writes "ISO-time message" to stderr, escaped and bounded. */
export const stderrLog: LogSink = stderrLogger.sink;

/** Discards log lines. */
export const quietLog: LogSink = () => {};

// --- aggregation ----------------------------------------------------------------------------------------

/** Options of a LogAggregator. */
export interface AggregatorOptions {
  /** Length of an aggregation interval (default 10 s). */
  intervalMs?: number;
  /** Kinds tracked at once; events of further kinds are only counted together (default 1024). */
  maxKeys?: number;
  /** Events logged as they happen per interval, all kinds together (default 100); the rest are counted. */
  maxLines?: number;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
}

interface Kind {
  /** Events in the current interval. */
  count: number;
  /** Whether the first of them was logged as it happened. */
  logged: boolean;
  since: number;
  summary: (n: number, seconds: number) => LogEvent;
}

/**
 * Logs the first event of each kind as it happens, then counts the kind's repeats and logs one
 * summary per interval while they continue ("312 stripes from 203.0.113.7 dropped in the last 10 s:
 * E_HANDSHAKE_TIMEOUT"). Memory is bounded by maxKeys; lines by maxLines per interval plus one summary
 * per tracked kind and one for everything beyond maxKeys. Pure apart from `emit`; the clock is passed in.
 */
export class LogAggregator {
  private readonly kinds = new Map<string, Kind>();
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly maxLines: number;
  private readonly now: () => number;
  private linesLeft: number;
  private linesSince: number;
  private overflow = 0;
  private overflowSince = 0;
  private nextFlush: number;

  constructor(
    private readonly emit: (ev: LogEvent) => void,
    opts: AggregatorOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.maxKeys = opts.maxKeys ?? 1024;
    this.maxLines = opts.maxLines ?? 100;
    this.now = opts.now ?? (() => performance.now());
    this.linesLeft = this.maxLines;
    this.linesSince = this.now();
    this.nextFlush = this.linesSince + Math.min(1000, this.intervalMs);
  }

  /** Kinds currently tracked. */
  get size(): number {
    return this.kinds.size;
  }

  /**
   * One event of kind `key`: `ev` is logged now if it is the first of its kind in a while (and the line
   * budget allows); otherwise it is counted, and `summary(n, seconds)` later renders the line for the
   * n events of the interval.
   */
  note(key: string, ev: LogEvent, summary: (n: number, seconds: number) => LogEvent): void {
    const now = this.now();
    if (now >= this.nextFlush) this.flush();
    const kind = this.kinds.get(key);
    if (kind) {
      kind.count++;
      return;
    }
    if (this.kinds.size >= this.maxKeys) {
      if (this.overflow === 0) this.overflowSince = now;
      this.overflow++;
      return;
    }
    if (now - this.linesSince >= this.intervalMs) {
      this.linesLeft = this.maxLines;
      this.linesSince = now;
    }
    const logged = this.linesLeft > 0;
    if (logged) {
      this.linesLeft--;
      this.emit(ev);
    }
    this.kinds.set(key, { count: 1, logged, since: now, summary });
  }

  /** Logs the summaries of intervals that have ended and forgets quiet kinds. note() calls it too. */
  flush(): void {
    const now = this.now();
    this.nextFlush = now + Math.min(1000, this.intervalMs);
    for (const [key, kind] of this.kinds) {
      if (now - kind.since < this.intervalMs) continue;
      // A kind that went quiet is forgotten (its next event is logged as it happens); a busy one gets
      // its summary and a new interval in which every event is counted.
      if (!this.summarise(kind, now)) this.kinds.delete(key);
    }
    if (this.overflow > 0 && now - this.overflowSince >= this.intervalMs) this.summariseOverflow(now);
  }

  /** Logs every pending summary now (the proxy is stopping). */
  close(): void {
    const now = this.now();
    for (const kind of this.kinds.values()) this.summarise(kind, now);
    this.kinds.clear();
    if (this.overflow > 0) this.summariseOverflow(now);
  }

  /** Logs the kind's summary if it had events not logged yet, and starts its next interval; false if quiet. */
  private summarise(kind: Kind, now: number): boolean {
    if (kind.count - (kind.logged ? 1 : 0) === 0) return false;
    this.emit(kind.summary(kind.count, Math.max(1, Math.round((now - kind.since) / 1000))));
    kind.count = 0;
    kind.logged = false;
    kind.since = now;
    return true;
  }

  private summariseOverflow(now: number): void {
    const seconds = Math.max(1, Math.round((now - this.overflowSince) / 1000));
    this.emit({
      level: "warn",
      event: "log.overflow",
      msg: `${this.overflow} more events of other kinds in the last ${seconds} s (over ${this.maxKeys} kinds at once)`,
      fields: { count: this.overflow, seconds },
    });
    this.overflow = 0;
  }
}

// --- session lines --------------------------------------------------------------------------------------

/** Human-readable byte count. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** Short hex id for logs. */
export function hexId(id: Uint8Array, bytes = 6): string {
  return Buffer.from(id.subarray(0, bytes)).toString("hex");
}

/**
 * The one line logged when a session ends: bytes each way, duration, stripe trouble, the remote address
 * (server: the stripe that opened it; client: the app), why it ended. The reason may quote the peer (a
 * RESET reason): it is escaped and bounded here as well as by the sink.
 */
export function sessionEndLine(id: string, up: number, down: number, ms: number, m: SessionMetrics, err?: StriperError, remote?: string): string {
  const reason = err ? `${err.code} ${escapeText(err.message)}` : "ok";
  return (
    `session ${id} end up ${formatBytes(up)} down ${formatBytes(down)} ${(ms / 1000).toFixed(2)} s ` +
    `stripe-deaths ${m.stripeDeaths} resent ${formatBytes(m.resentBytes)} acks ${formatBytes(m.ackBytes)}` +
    `${remote === undefined ? "" : ` remote ${escapeText(remote, 80)}`} reason ${reason}`
  );
}

/** The session-end line as a structured event (same text; the figures as fields for JSON). */
export function sessionEndEvent(id: string, up: number, down: number, ms: number, m: SessionMetrics, err?: StriperError, remote?: string): LogEvent {
  return {
    level: err ? "warn" : "info",
    event: "session.end",
    session: id,
    remote,
    msg: sessionEndLine(id, up, down, ms, m, err, remote),
    fields: {
      up,
      down,
      ms: Math.round(ms),
      stripeDeaths: m.stripeDeaths,
      resent: m.resentBytes,
      acks: m.ackBytes,
      code: err?.code ?? "ok",
      reason: err?.message,
    },
  };
}

/**
 * One line of live statistics for a session: per stripe, rate, in flight (and its cap, when the
 * scheduler sets one), smoothed and minimum RTT, the queue it holds (their difference), stalls.
 */
export function sessionStatsLine(id: string, m: SessionMetrics): string {
  const stripes = m.perStripe
    .map(
      (p) =>
        `#${p.index} ${(p.rate / 1e6).toFixed(2)}MB/s inflight ${formatBytes(p.inflight)}${p.cap > 0 ? ` cap ${formatBytes(Math.round(p.cap))}` : ""} ` +
        `rtt ${p.rtt.toFixed(1)}ms min ${p.minRtt.toFixed(1)}ms queue ${p.queue.toFixed(1)}ms stalls ${p.stalls}`,
    )
    .join("; ");
  return (
    `session ${id} stats stripes ${m.usableStripes}/${m.stripes} store ${formatBytes(m.sendBufferBytes)} ` +
    `reorder ${formatBytes(m.reorderBytes)} deaths ${m.stripeDeaths} resent ${formatBytes(m.resentBytes)} | ${stripes}`
  );
}
