/**
 * Session options: their defaults, their valid ranges and one check of them, for the command line and
 * for library users alike. The ranges are the command line's (docs/protocol.md §11); `StripedPipe`
 * checks its options when it is built, so a bad value fails at once with a ConfigError naming it.
 */

import type { Clock } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import { SCHEDULER_MODES, type SchedulerMode } from "./stripe/scheduler.ts";
import { MAX_FRAME_PAYLOAD } from "./wire/constants.ts";

/** Tunables of a striped session. */
export interface SessionOptions {
  /** "client" re-dials dead stripes; "server" waits for them to re-join. */
  role: "client" | "server";
  /** Receive window offered to the peer and the limit of the local send store, in bytes. */
  window: number;
  /** Largest DATA payload per frame. */
  frameSize: number;
  /** Largest single write to a stripe (frames are coalesced up to this). */
  batchSize: number;
  /** Which stripe carries the next frame (src/stripe/scheduler.ts). */
  scheduler: SchedulerMode;
  /** A stripe that received nothing for this long is pinged. */
  keepaliveMs: number;
  /** A stripe that received nothing for this long is declared dead. */
  deadMs: number;
  /** How long the session outlives having no stripe at all. */
  graceMs: number;
  /** Time and timers; real ones by default. Tests pass a manual clock. */
  clock?: Clock;
}

/** Defaults; the CLI exposes most of them. */
export const DEFAULT_SESSION_OPTIONS: Omit<SessionOptions, "role"> = {
  window: 16 * 1024 * 1024,
  frameSize: 256 * 1024,
  batchSize: 512 * 1024,
  scheduler: "rate",
  keepaliveMs: 1000,
  deadMs: 5000,
  graceMs: 10_000,
};

/** Default limit on the bytes all sessions of one proxy hold in their send stores. */
export const DEFAULT_MAX_BUFFER = 32 * 1024 * 1024;

/**
 * Default limit on the memory all reorder buffers of one proxy may use together (src/stripe/budget.ts,
 * ReceiveWindows): windows are granted against it as sessions open.
 */
export const DEFAULT_MAX_RECEIVE_BUFFER = 512 * 1024 * 1024;

/** An inclusive integer range. */
export interface Range {
  readonly min: number;
  readonly max: number;
}

/**
 * Valid values of the numeric session options (inclusive). `deadMs` must also exceed `keepaliveMs`.
 * frameSize stops at the largest payload the wire allows; batchSize is not tied to frameSize (a frame
 * larger than the batch is cut to it).
 */
export const SESSION_LIMITS = {
  window: { min: 64 * 1024, max: 1 << 30 },
  frameSize: { min: 1024, max: MAX_FRAME_PAYLOAD },
  batchSize: { min: 16 * 1024, max: 16 * 1024 * 1024 },
  keepaliveMs: { min: 50, max: 600_000 },
  deadMs: { min: 100, max: 3_600_000 },
  graceMs: { min: 0, max: 3_600_000 },
} as const satisfies Record<string, Range>;

/** Stripes per session a client may open (the server's default `maxStripes` is the maximum). */
export const STRIPE_COUNT: Range = { min: 1, max: 64 };

/** Throws ConfigError unless `value` is an integer in `range`; `name` is the option's name. */
export function checkRange(name: string, value: number, range: Range): void {
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new ConfigError(name, `${name} must be an integer between ${range.min} and ${range.max}, got ${value}`);
  }
}

/** Throws ConfigError naming the first option that is out of range; returns `opts` unchanged otherwise. */
export function validateSessionOptions<T extends SessionOptions>(opts: T): T {
  if (opts.role !== "client" && opts.role !== "server") {
    throw new ConfigError("role", `role must be "client" or "server", got ${String(opts.role)}`);
  }
  for (const name of Object.keys(SESSION_LIMITS) as (keyof typeof SESSION_LIMITS)[]) {
    checkRange(name, opts[name], SESSION_LIMITS[name]);
  }
  if (opts.deadMs <= opts.keepaliveMs) {
    throw new ConfigError("deadMs", `deadMs (${opts.deadMs}) must be longer than keepaliveMs (${opts.keepaliveMs})`);
  }
  if (!SCHEDULER_MODES.includes(opts.scheduler)) {
    throw new ConfigError("scheduler", `scheduler must be one of ${SCHEDULER_MODES.join(", ")}, got ${String(opts.scheduler)}`);
  }
  return opts;
}
