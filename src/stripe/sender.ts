/**
 * Sender: our stream on its way out. Pure. It keeps every byte until the peer acknowledges it
 * (SendBuffer), hands out the next piece to frame (resends first, then new data within the peer's
 * window, protocol §6), says when the FIN is due (after the last byte, nothing left to resend, §4.5),
 * and takes back a stripe's unconfirmed frames when that stripe dies or holds up delivery (§7).
 *
 * fill() frames DATA into a batch for one stripe and records each frame in that stripe's ledger. It
 * calls next(max), then commit(len) with what it actually framed; next() sets `offset` rather than
 * returning a pair, so the per-frame path allocates nothing beyond the payload's subarray. plan() and
 * framePlanned() do the same in two steps, so that the session can assign frames to several stripes in
 * turn and then write one batch per stripe.
 */

import { ProtocolError } from "../errors.ts";
import { FRAME_HEADER_SIZE } from "../wire/constants.ts";
import type { SessionEnd } from "./ending.ts";
import type { StripeLedger } from "./ledger.ts";
import { ResendQueue } from "./resend.ts";
import { SendBuffer } from "./sendbuf.ts";

/** Where DATA frames go (a FrameBatch). */
export interface DataSink {
  /** Bytes written so far: the end of the last frame appended. */
  readonly length: number;
  /** Payload bytes a frame appended now may carry. */
  readonly dataRoom: number;
  appendData(offset: number, payload: Uint8Array): void;
}

/**
 * DATA assigned to one stripe by the current pump and not framed yet (planned sending, see plan()): the
 * pieces' stream offsets and payload views, their payload bytes, and the batch space they will take.
 */
export interface StripePlan {
  readonly planOff: number[];
  readonly planData: Uint8Array[];
  /** Payload bytes planned. */
  planned: number;
  /** Batch bytes the planned frames will take at most (payload, headers, worst-case padding). */
  planSpace: number;
}

/** Batch bytes a DATA frame takes besides its payload, at most: the header and 63 bytes of padding. */
const FRAME_SPACE = FRAME_HEADER_SIZE + 63;

/** A chunk tail shorter than this rides along in the current batch rather than leaving alone later. */
export const SHORT_TAIL = 16 * 1024;
/** A frame is started only while the batch has this much payload room left. */
const MIN_DATA_ROOM = 1024;

/** The sending half of a session. */
export class Sender {
  readonly buf = new SendBuffer();
  readonly resend = new ResendQueue();
  /** First stream byte never framed yet. */
  nextOffset = 0;
  /** Bytes framed again from the resend queue. */
  resentBytes = 0;
  /** Stream offset of the piece next() returned. */
  offset = 0;
  private fromResend = false;

  constructor(
    /** The peer's receive window: new data is framed only below acked + peerWindow. */
    public peerWindow: number,
    private readonly end: SessionEnd,
  ) {}

  /** Adds app bytes to the stream (kept, not copied). */
  append(chunk: Uint8Array): void {
    this.buf.append(chunk);
  }

  /** True when something can be framed now: a resend, new data within the window, or the FIN. */
  hasWork(): boolean {
    this.resend.trim(this.buf.acked);
    if (this.resend.length > 0) return true;
    if (this.nextOffset < this.buf.end && this.nextOffset < this.buf.acked + this.peerWindow) return true;
    return this.finDue();
  }

  /**
   * The next piece to frame, at most `max` bytes (max ≥ 1), from a single app chunk; `offset` tells
   * where it sits. Resends come first. Undefined when nothing can be framed.
   */
  next(max: number): Uint8Array | undefined {
    const buf = this.buf;
    const resend = this.resend;
    if (resend.length > 0) {
      resend.trim(buf.acked);
      if (resend.length > 0) {
        const offset = (this.offset = resend.start);
        this.fromResend = true;
        return buf.read(offset, Math.min(resend.end - offset, max));
      }
    }
    const offset = this.nextOffset;
    const windowEnd = buf.acked + this.peerWindow;
    if (offset >= buf.end || offset >= windowEnd) return undefined;
    this.offset = offset;
    this.fromResend = false;
    return buf.read(offset, Math.min(Math.min(buf.end, windowEnd) - offset, max));
  }

  /** The first `len` bytes of the piece next() returned were framed. */
  commit(len: number): void {
    const end = this.offset + len;
    if (this.fromResend) {
      this.resentBytes += len;
      this.resend.consume(end);
    } else {
      this.nextOffset = end;
    }
  }

  /**
   * Frames DATA into `batch` for one stripe, resends first: each frame at most `frameSize` and from a
   * single app chunk, until `allowance` payload bytes or `batchSize` are reached or nothing is left.
   * Each frame is recorded in `ledger` at its stripe end position (ledger.sent + its end in the batch).
   * Returns the number of frames.
   */
  fill(batch: DataSink, ledger: StripeLedger, allowance: number, frameSize: number, batchSize: number, now: number): number {
    let frames = 0;
    let budget = allowance;
    let payloadBytes = 0;
    while (budget >= 1 && payloadBytes < batchSize && batch.dataRoom >= MIN_DATA_ROOM) {
      let payload = this.next(Math.min(frameSize, budget, batch.dataRoom));
      if (payload === undefined) break;
      // Cut at the batch size, unless what would be left of this chunk is a short tail: that would
      // go out later as a write of its own (measured: one 79-byte write per 512 KiB otherwise).
      const left = batchSize - payloadBytes;
      if (payload.byteLength > left && payload.byteLength - left >= SHORT_TAIL) payload = payload.subarray(0, left);
      const len = payload.byteLength;
      if (len === 0) break; // never an empty DATA frame
      const offset = this.offset;
      batch.appendData(offset, payload);
      this.commit(len);
      ledger.record(offset, len, ledger.sent + batch.length, now);
      payloadBytes += len;
      budget -= len;
      frames++;
    }
    return frames;
  }

  /**
   * Planned sending (the rate scheduler interleaves frames over the stripes, then each stripe sends one
   * batch): takes up to `allowance` payload bytes for one stripe, resends first, in pieces of at most
   * `frameSize` (each from a single app chunk), while the stripe's batch has `space` bytes for them.
   * The pieces count as framed from now on (framePlanned() frames them). Returns the bytes taken.
   */
  plan(into: StripePlan, allowance: number, frameSize: number, space: number): number {
    let taken = 0;
    while (allowance - taken >= 1) {
      const room = space - into.planSpace - FRAME_SPACE;
      if (room < 1) break;
      const payload = this.next(Math.min(frameSize, allowance - taken, room));
      if (payload === undefined || payload.byteLength === 0) break;
      const len = payload.byteLength;
      into.planOff.push(this.offset);
      into.planData.push(payload);
      into.planned += len;
      into.planSpace += len + FRAME_SPACE;
      this.commit(len);
      taken += len;
    }
    return taken;
  }

  /**
   * Frames the pieces planned for one stripe into `batch`, in the order they were planned, records each
   * in the stripe's ledger (as fill() does), and clears the plan. Returns the number of frames.
   */
  framePlanned(batch: DataSink, stripe: StripeLedger & StripePlan, now: number): number {
    const n = stripe.planOff.length;
    for (let k = 0; k < n; k++) {
      const offset = stripe.planOff[k]!;
      const payload = stripe.planData[k]!;
      batch.appendData(offset, payload);
      stripe.record(offset, payload.byteLength, stripe.sent + batch.length, now);
    }
    stripe.planOff.length = 0;
    stripe.planData.length = 0;
    stripe.planned = 0;
    stripe.planSpace = 0;
    return n;
  }

  /** The FIN should go out now: it is owed, and every byte before it has been framed with no resend pending. */
  finDue(): boolean {
    if (!this.end.finOwed || this.nextOffset !== this.buf.end) return false;
    this.resend.trim(this.buf.acked);
    return this.resend.length === 0;
  }

  /** The FIN's value: the final length of our stream. */
  get finalOffset(): number {
    return this.buf.end;
  }

  /** Applies the peer's cumulative ack; returns the bytes released. Beyond what was framed is E_BAD_ACK. */
  ack(value: number): number {
    if (value > this.nextOffset || value < 0) {
      throw new ProtocolError("E_BAD_ACK", `ack ${value} beyond data sent (${this.nextOffset})`);
    }
    return value > this.buf.acked ? this.buf.ack(value) : 0;
  }

  /** Queues again whatever `ledger` (a stripe that died or stalls) holds unconfirmed above the ack; returns the bytes. */
  requeue(ledger: StripeLedger): number {
    return ledger.requeue(this.buf.acked, this.resend);
  }

  /** Drops everything held (session teardown). */
  clear(): void {
    this.buf.clear();
    this.resend.clear();
  }
}
