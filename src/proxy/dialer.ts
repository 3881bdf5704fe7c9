/**
 * The client's stripe dialer for one session: which stripe index to dial, with which generation and
 * HELLO kind, when to dial it again after a failure (jittered exponential backoff), and when to give up
 * (every first dial failed before any succeeded). docs/protocol.md §3.1, §7.4.
 *
 * It does no I/O itself: `dial` starts one attempt (connect, HELLO, WELCOME — the client's glue) and the
 * glue reports the outcome with `succeeded` / `failed`. The clock and the jitter are injected, so tests
 * drive it without sockets or real time.
 */

import type { StriperError } from "../errors.ts";
import { HELLO_JOIN, HELLO_OPEN } from "../wire/constants.ts";

/** First re-dial delay, before jitter. */
export const BACKOFF_BASE_MS = 50;
/** Longest re-dial delay, before jitter. */
export const BACKOFF_MAX_MS = 2000;

/** One dial of one stripe index. */
export interface DialAttempt {
  readonly index: number;
  /** 1 on the index's first dial, +1 on each re-dial, mod 2^16. */
  readonly generation: number;
  /** OPEN until the session has been accepted on some stripe, JOIN after. */
  readonly kind: typeof HELLO_OPEN | typeof HELLO_JOIN;
}

/** Timers as the dialer uses them; the default is the real clock (unref'd: a pending re-dial keeps no process alive). */
export interface DialTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** What the dialer needs from its session. */
export interface DialerOptions {
  /** Stripes per session: indices 0 … stripes−1. */
  stripes: number;
  /** Starts one attempt; its outcome must come back through succeeded() or failed(). */
  dial(attempt: DialAttempt): void;
  /** Every first dial failed before any succeeded: the session cannot open. `last` is the last failure. */
  unreachable(last: StriperError): void;
  /** Uniform in [0, 1), for the jitter (default Math.random). */
  random?: () => number;
  timers?: DialTimers;
}

const realTimers: DialTimers = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * The delay before re-dialling an index that has failed `failures` times in a row:
 * min(BACKOFF_MAX_MS, BACKOFF_BASE_MS × 2^failures) × a factor in [0.5, 1.5) taken from `random`.
 */
export function backoffMs(failures: number, random: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** failures) * (0.5 + random);
}

/** Dials the stripes of one session and re-dials them as they fail or die. */
export class StripeDialer {
  private readonly generation: number[];
  /** Consecutive failures per index since its last success: the backoff exponent. */
  private readonly failures: number[];
  /** A pending re-dial per index: at most one each, so the table is bounded by the stripe count. */
  private readonly pending: (unknown | undefined)[];
  /** Indices whose first dial failed while no stripe had been accepted yet. */
  private failedFirst: number[] = [];
  private accepted = false;
  private stopped = false;
  private readonly random: () => number;
  private readonly timers: DialTimers;

  constructor(private readonly opts: DialerOptions) {
    this.generation = new Array<number>(opts.stripes).fill(0);
    this.failures = new Array<number>(opts.stripes).fill(0);
    this.pending = new Array<unknown>(opts.stripes).fill(undefined);
    this.random = opts.random ?? Math.random;
    this.timers = opts.timers ?? realTimers;
  }

  /** True once a stripe of the session has been accepted: from then on dials are JOINs. */
  get everAccepted(): boolean {
    return this.accepted;
  }

  /** Dials every index at once (the session's first stripes travel in parallel). */
  start(): void {
    for (let i = 0; i < this.opts.stripes; i++) this.dial(i);
  }

  /** The attempt on `index` was accepted. */
  succeeded(index: number): void {
    this.failures[index] = 0;
    if (this.accepted) return;
    this.accepted = true;
    // Indices whose first dial failed before any succeeded are dialled again now, with backoff.
    for (const i of this.failedFirst.splice(0)) this.redial(i);
  }

  /** The attempt on `index` failed (refused, unreachable, timed out, garbage). */
  failed(index: number, err: StriperError): void {
    if (this.stopped) return;
    if (this.accepted) return this.redial(index);
    // Before the session was accepted anywhere: give up once every first dial has failed.
    this.failedFirst.push(index);
    if (this.failedFirst.length >= this.opts.stripes) this.opts.unreachable(err);
  }

  /** Dials `index` again after its backoff (a failed attempt, or an attached stripe that died). */
  redial(index: number): void {
    if (this.stopped || this.pending[index] !== undefined) return;
    const delay = backoffMs(this.failures[index]!++, this.random());
    this.pending[index] = this.timers.set(() => {
      this.pending[index] = undefined;
      this.dial(index);
    }, delay);
  }

  /** No more dials: the session has ended. Pending re-dials are cancelled. */
  stop(): void {
    this.stopped = true;
    for (let i = 0; i < this.pending.length; i++) {
      if (this.pending[i] !== undefined) this.timers.clear(this.pending[i]);
      this.pending[i] = undefined;
    }
  }

  private dial(index: number): void {
    if (this.stopped) return;
    const generation = (this.generation[index] = (this.generation[index]! + 1) & 0xffff);
    this.opts.dial({ index, generation, kind: this.accepted ? HELLO_JOIN : HELLO_OPEN });
  }
}
