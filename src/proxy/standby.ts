/**
 * Standby stripes, server side (issue 13, docs/protocol.md §3.15): stripes a client opens ahead of need
 * (an OPEN with HEADER_FLAG_STANDBY) so that a new app connection finds one authenticated already and its
 * first bytes need no TCP handshake. Such a stripe is not a session yet: the server holds only the
 * connection and what the OPEN proved (its key, its session secret), with one timer, until the client
 * takes it with a TARGET frame — then the session opens as if the OPEN had just arrived with that
 * destination, under the same session id (what load balancers hash: it must stay the session's id).
 *
 * Bounded: `max` held in all, `perSource` from one source (IPv4 address or IPv6 /64), each for at most
 * `idleMs`, after which the server closes it (a clean FIN: the client's pool sees it end). A client
 * cannot hold a slot longer than that, nor more slots than its share.
 *
 * `readTarget` reads the TARGET frame from the stripe's frame stream; it must be the first frame.
 */

import { ProtocolError, StriperError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { MAX_HEADER } from "../secure/constants.ts";
import { readOptionsBody, type Tlv } from "../secure/messages.ts";
import { readU64 } from "../wire/codec.ts";
import { FRAME_HEADER_SIZE, FrameType } from "../wire/constants.ts";

/** Default standby stripes a server holds in all. */
export const DEFAULT_MAX_STANDBY = 256;
/** Default standby stripes from one source. */
export const DEFAULT_STANDBY_PER_SOURCE = 16;
/** Default time a standby stripe is held untaken, ms (a client retires its own well before). */
export const DEFAULT_STANDBY_IDLE_MS = 60_000;

/** Limits of a StandbyTable. */
export interface StandbyLimits {
  max: number;
  perSource: number;
}

/** Counts of held standby stripes, in all and per source; pure bookkeeping. */
export class StandbyTable {
  private readonly keys = new Set<string>();
  private readonly bySource = new Map<string, number>();

  constructor(private readonly limits: StandbyLimits) {}

  /** Standby stripes held now. */
  get size(): number {
    return this.keys.size;
  }

  /** Whether a standby stripe with this session key is held. */
  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** Why one more from `source` cannot be held (undefined: it can). */
  blocker(source: string): string | undefined {
    if (this.keys.size >= this.limits.max) return `standby limit ${this.limits.max}`;
    if ((this.bySource.get(source) ?? 0) >= this.limits.perSource) return `standby limit ${this.limits.perSource} per source`;
    return undefined;
  }

  /** Records a held stripe (the caller checked `blocker` and `has`). */
  add(key: string, source: string): void {
    this.keys.add(key);
    this.bySource.set(source, (this.bySource.get(source) ?? 0) + 1);
  }

  /** Forgets a held stripe (taken, expired or closed). */
  remove(key: string, source: string): void {
    if (!this.keys.delete(key)) return;
    const n = (this.bySource.get(source) ?? 1) - 1;
    if (n <= 0) this.bySource.delete(source);
    else this.bySource.set(source, n);
  }
}

/** A TARGET frame: the client's receive window for the session, and the options (its destination). */
export interface TargetFrame {
  window: number;
  options: Tlv[];
}

/** What `readTarget` makes of the frame-stream bytes so far. */
export type TargetStep =
  | { readonly kind: "more" }
  /** The frame, and the bytes after it (the session's first frames: 0-RTT data). */
  | { readonly kind: "done"; readonly frame: TargetFrame; readonly rest: Uint8Array }
  | { readonly kind: "invalid"; readonly error: StriperError };

/**
 * Reads a TARGET frame at the start of `buf` (the plaintext frame stream of a standby stripe). Anything
 * else first, flags or pad set, a payload above MAX_HEADER or options that do not parse: invalid
 * (E_UNEXPECTED_FRAME, E_FRAME_TOO_LARGE, E_BAD_DESTINATION). Pure.
 */
export function readTarget(buf: Uint8Array): TargetStep {
  if (buf.byteLength < FRAME_HEADER_SIZE) return { kind: "more" };
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const type = buf[0]!;
  if (type !== FrameType.Target) return { kind: "invalid", error: new ProtocolError("E_UNEXPECTED_FRAME", `a standby stripe's first frame is of type ${type}, not TARGET`) };
  if (buf[1] !== 0 || buf[2] !== 0) return { kind: "invalid", error: new ProtocolError("E_UNEXPECTED_FRAME", "TARGET with flags or pad") };
  const length = v.getUint32(4);
  if (length > MAX_HEADER) return { kind: "invalid", error: new ProtocolError("E_FRAME_TOO_LARGE", `TARGET payload of ${length} bytes, limit ${MAX_HEADER}`) };
  let window: number;
  try {
    window = readU64(v, 8);
  } catch (err) {
    return { kind: "invalid", error: err as ProtocolError };
  }
  if (window > 0xffff_ffff) return { kind: "invalid", error: new ProtocolError("E_UNEXPECTED_FRAME", `TARGET window ${window} above u32`) };
  if (buf.byteLength < FRAME_HEADER_SIZE + length) return { kind: "more" };
  const options = readOptionsBody(buf.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + length));
  if (options === undefined) return { kind: "invalid", error: new StriperError("E_BAD_DESTINATION", "TARGET options truncated") };
  return { kind: "done", frame: { window, options }, rest: buf.subarray(FRAME_HEADER_SIZE + length) };
}

/** How a held standby stripe ended. */
export type StandbyEnd =
  /** Taken: open the session; `carrier` is paused-free and its handler must be replaced synchronously. */
  | { readonly kind: "taken"; readonly frame: TargetFrame; readonly rest: Uint8Array }
  /** Not taken within the idle time: the server closed it (FIN). */
  | { readonly kind: "expired" }
  /** The client closed it, or it broke, or sent something other than TARGET (`error`). */
  | { readonly kind: "gone"; readonly error: StriperError | undefined };

/**
 * Holds a standby stripe: reads its frame stream (at most FRAME_HEADER_SIZE + MAX_HEADER bytes) until a
 * TARGET frame, for at most `idleMs`. `done` is called once. The carrier is resumed here.
 */
export function holdStandby(carrier: Pipe, idleMs: number, done: (end: StandbyEnd) => void): void {
  let parts: Uint8Array[] = [];
  let have = 0;
  let over = false;
  const finish = (end: StandbyEnd): void => {
    if (over) return;
    over = true;
    clearTimeout(timer);
    parts = [];
    done(end);
  };
  const timer = setTimeout(() => {
    if (over) return;
    carrier.shutdown(); // a clean end: the client's pool drops it, nothing was lost
    setTimeout(() => carrier.close(), 1000).unref?.();
    finish({ kind: "expired" });
  }, idleMs);
  timer.unref?.();
  carrier.setHandler({
    data(chunk) {
      if (over) return;
      parts.push(chunk);
      have += chunk.byteLength;
      const all = parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts));
      parts = [all];
      const step = readTarget(all);
      switch (step.kind) {
        case "more":
          if (have > FRAME_HEADER_SIZE + MAX_HEADER + 64 * 1024) {
            // A huge first chunk that is still "more" cannot happen (the header bounds the payload), but
            // the bound must not depend on that reasoning alone.
            carrier.close(new ProtocolError("E_FRAME_TOO_LARGE", "standby stripe sent too much before TARGET"));
          }
          return;
        case "invalid":
          carrier.close(step.error);
          finish({ kind: "gone", error: step.error });
          return;
        case "done":
          finish({ kind: "taken", frame: step.frame, rest: step.rest });
          return;
        default: {
          const never: never = step;
          throw new Error(`unknown target step ${JSON.stringify(never)}`);
        }
      }
    },
    drain() {},
    end() {
      carrier.close();
      finish({ kind: "gone", error: undefined });
    },
    close(err) {
      finish({ kind: "gone", error: err });
    },
  });
  carrier.resume();
}
