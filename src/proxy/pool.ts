/**
 * Standby stripes, client side (issue 13, docs/protocol.md §3.15): a small pool of stripes opened and
 * authenticated ahead of need, each the opening stripe of a session that has no destination yet. A new
 * app connection takes one at once: its session id becomes the session's id (so a load balancer that
 * hashes it keeps the session's later stripes together), the client sends a TARGET frame with the
 * destination, and the app's first bytes follow in the same write — no TCP or key handshake on the path
 * of a short connection. Without a pooled stripe a session opens as before (OPEN with 0-RTT).
 *
 * Bounded and cheap for the server: at most `size` stripes; each is retired by the client after
 * `retireMs` (well before the server's own limit, so the server never closes one that is being taken);
 * the pool is refilled only while it is being used (a take within `warmMs`): an idle client holds no
 * slots for long. A dial that fails backs off (1 s doubling to 30 s) before the pool tries again.
 */

import { randomBytes } from "node:crypto";
import { StriperError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { SealedPipe } from "../pipe/sealed.ts";
import { connectTcp, type Address } from "../pipe/tcp.ts";
import { FIRST_FRAME_COUNTER, HEADER_FLAG_STANDBY, KIND_OPEN, SALT_SIZE, SECRET_SIZE, SID_SIZE } from "../secure/constants.ts";
import { encodeClientHello, encodeOptions, type HandshakeAuth, type Tlv } from "../secure/messages.ts";
import { RecordOpener } from "../secure/record.ts";
import { encodeFrame } from "../wire/codec.ts";
import { FRAME_TARGET } from "../wire/constants.ts";
import { serverReplyParser } from "../wire/handshake.ts";
import { destinationOptions, type Destination } from "./destination.ts";
import { judgeReply, noAuthenticReply, readHandshake, replyNotAuthentic } from "./handshake.ts";

/** Default pooled stripes. */
export const DEFAULT_POOL_SIZE = 2;
/** A pooled stripe is retired after this long untaken, ms (servers hold one for 60 s by default). */
export const POOL_RETIRE_MS = 25_000;
/** The pool is refilled while a stripe was taken within this long, ms. */
export const POOL_WARM_MS = 300_000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

/** A stripe ready to open a session: its reply read and accepted, its carrier ready for frames. */
export interface PooledStripe {
  readonly sid: Uint8Array;
  /** The session secret S its OPEN carried (later JOINs prove it). */
  readonly secret: Uint8Array;
  /** The keys it was opened with: the session keeps them (JOINs must use the same key). */
  readonly auth: HandshakeAuth;
  /** Stripe index 0, generation 1. Frames go here (sealed when keyed). */
  readonly carrier: Pipe;
  /** The server's receive window for the session, from its reply. */
  readonly serverWindow: number;
  /** The reply's options: on a server of several workers, where the session's JOINs go (src/proxy/join.ts). */
  readonly replyOptions: readonly Tlv[];
}

/** What a pooled stripe's OPEN carries and where it goes. */
export interface StandbyDial {
  peer: Address;
  auth: HandshakeAuth;
  /** Stripes the client's sessions have (the header's stripe count). */
  stripes: number;
  /** The client's receive window (the TARGET frame carries the session's real one). */
  window: number;
  wall: () => number;
  /** Deadline for the server's reply, ms. */
  timeoutMs: number;
}

/** Dials one standby stripe: connect, OPEN with HEADER_FLAG_STANDBY, the authenticated reply. */
export function dialStandby(d: StandbyDial, done: (r: PooledStripe | StriperError) => void): void {
  const sid = new Uint8Array(randomBytes(SID_SIZE));
  const secret = new Uint8Array(randomBytes(SECRET_SIZE));
  const cs = d.auth.mode === "keyed" ? new Uint8Array(randomBytes(SALT_SIZE)) : new Uint8Array(SALT_SIZE);
  const out = encodeClientHello(
    d.auth,
    sid,
    {
      kind: KIND_OPEN,
      flags: HEADER_FLAG_STANDBY,
      stripeIndex: 0,
      generation: 1,
      stripeCount: d.stripes,
      timestampMs: Math.floor(d.wall()),
      window: d.window,
      secret,
      options: [],
    },
    cs,
  );
  const pipe = connectTcp(d.peer);
  pipe.send(out.bytes);
  readHandshake(pipe, serverReplyParser(d.auth, { sid, cs: out.cs }), { deadlineMs: d.timeoutMs }, (r) => {
    if (r instanceof StriperError) {
      const err = r.code === "E_HANDSHAKE_REJECTED" ? replyNotAuthentic() : r.code === "E_HANDSHAKE_TIMEOUT" ? noAuthenticReply(d.timeoutMs) : r;
      pipe.close(err);
      return done(err);
    }
    const v = judgeReply(r.value.reply);
    if (v.kind !== "attach") {
      pipe.close(v.error);
      return done(v.error);
    }
    let carrier: Pipe = pipe;
    if (out.sealer !== undefined && r.value.key !== undefined) {
      carrier = new SealedPipe(pipe, { sealer: out.sealer, opener: new RecordOpener(r.value.key, FIRST_FRAME_COUNTER), leftover: r.leftover });
    }
    done({ sid, secret, auth: d.auth, carrier, serverWindow: v.window, replyOptions: r.value.reply.options });
  });
}

/** The TARGET frame that starts a pooled stripe's session: the client's window and the destination. */
export function targetFrame(window: number, destination: Destination): Uint8Array {
  return encodeFrame(FRAME_TARGET, 0, window, encodeOptions(destinationOptions(destination)));
}

/** Options of a StripePool. */
export interface StripePoolOptions {
  size: number;
  /** Dials one pooled stripe (dialStandby with the client's current keys). */
  dial(done: (r: PooledStripe | StriperError) => void): void;
  retireMs?: number;
  warmMs?: number;
  log?: (line: string) => void;
}

interface Entry {
  stripe: PooledStripe;
  timer: ReturnType<typeof setTimeout>;
}

/** The client's pool of standby stripes; see the module comment. */
export class StripePool {
  private readonly ready: Entry[] = [];
  private dialling = 0;
  private lastUse = performance.now();
  private backoffMs = 0;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  /** Stripes dialled, and taken, since start (statistics and tests). */
  dialled = 0;
  taken = 0;
  private readonly retireMs: number;
  private readonly warmMs: number;

  constructor(private readonly opts: StripePoolOptions) {
    this.retireMs = opts.retireMs ?? POOL_RETIRE_MS;
    this.warmMs = opts.warmMs ?? POOL_WARM_MS;
  }

  /** Stripes ready to be taken now. */
  get size(): number {
    return this.ready.length;
  }

  /** Fills the pool. */
  start(): void {
    this.fill();
  }

  /** A ready stripe, or undefined (the pool is empty: open the session the usual way). Refills. */
  take(): PooledStripe | undefined {
    this.lastUse = performance.now();
    const e = this.ready.shift();
    if (e !== undefined) {
      clearTimeout(e.timer);
      this.taken++;
    }
    this.fill();
    return e?.stripe;
  }

  /** Closes every pooled stripe and refills (the keys changed: new stripes use the new ones). */
  flush(): void {
    for (const e of this.ready.splice(0)) this.retire(e);
    this.fill();
  }

  /** Closes every pooled stripe; no more dials. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    for (const e of this.ready.splice(0)) this.retire(e);
  }

  private retire(e: Entry): void {
    clearTimeout(e.timer);
    e.stripe.carrier.setHandler({ data() {}, drain() {}, end() {}, close() {} });
    e.stripe.carrier.close();
  }

  private warm(): boolean {
    return performance.now() - this.lastUse <= this.warmMs;
  }

  private fill(): void {
    if (this.stopped || this.retry !== undefined || !this.warm()) return;
    while (this.ready.length + this.dialling < this.opts.size) {
      this.dialling++;
      this.dialled++;
      this.opts.dial((r) => this.dialled1(r));
    }
  }

  private dialled1(r: PooledStripe | StriperError): void {
    this.dialling--;
    if (r instanceof StriperError) {
      if (this.stopped) return;
      this.backoffMs = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, this.backoffMs * 2));
      this.opts.log?.(`standby stripe failed: ${r.code} ${r.message}; next try in ${this.backoffMs / 1000} s`);
      if (this.retry === undefined) {
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.fill();
        }, this.backoffMs);
        this.retry.unref?.();
      }
      return;
    }
    this.backoffMs = 0;
    if (this.stopped) {
      r.carrier.close();
      return;
    }
    const entry: Entry = {
      stripe: r,
      timer: setTimeout(() => {
        this.drop(entry);
        this.fill();
      }, this.retireMs),
    };
    entry.timer.unref?.();
    // Untaken, the server sends nothing: an end, a close or any byte means the stripe is no use.
    const gone = (): void => {
      this.drop(entry);
      this.fill();
    };
    r.carrier.setHandler({ data: gone, drain() {}, end: gone, close: gone });
    r.carrier.resume();
    this.ready.push(entry);
  }

  private drop(e: Entry): void {
    const i = this.ready.indexOf(e);
    if (i >= 0) this.ready.splice(i, 1);
    this.retire(e);
  }
}
