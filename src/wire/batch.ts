/**
 * Batches: many frames leave a stripe in one write() (every write is a syscall; 256 KiB writes run about
 * twice as fast as 16 KiB ones here). Two kinds, with the same interface for the session:
 *
 * - FrameBatch builds the frames in a pooled buffer. The one copy on the send path happens in
 *   appendData(): the payload is copied from the app's receive chunk into the batch. A copy whose
 *   destination sits 1–16 bytes past its source modulo 4096 runs ~13× slower on this CPU, so the header
 *   is followed by 0–63 pad bytes chosen from the real addresses (bun:ffi `ptr`) to make the payload
 *   co-aligned with its source on a 64-byte boundary. For carriers that send bytes as they are (plain
 *   stripes, `--no-auth`).
 * - PieceBatch lays the same bytes out as a list of pieces: headers and small payloads copied into a
 *   pooled buffer, large payloads left where they are (views of the app's chunks). For carriers that
 *   transform what they send (a sealed stripe encrypts it into a record: SealedPipe.sendv), so that the
 *   transformation is the send path's one copy instead of one more after the batch copy.
 */

import { ptr } from "bun:ffi";
import { FRAME_DATA, FRAME_HEADER_SIZE } from "./constants.ts";
import { writeFrameHeader } from "./codec.ts";

/** Bytes a session's batch buffer has beyond its batchSize: frame headers, padding and a chunk's short tail. */
export const BATCH_SLACK = 32 * 1024;

/** Reusable buffers of one size; bounded so idle sessions give memory back. */
export class BufferPool {
  private free: Uint8Array[] = [];
  constructor(
    readonly size: number,
    private readonly keep = 16,
  ) {}
  get(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(this.size);
  }
  put(buf: Uint8Array): void {
    if (this.free.length < this.keep && buf.byteLength === this.size) this.free.push(buf);
  }
}

/** A buffer being filled with frames. */
export class FrameBatch implements Batch {
  length = 0;
  private view: DataView;
  private base: number;

  constructor(public buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.base = buf.byteLength > 0 ? ptr(buf) : 0;
  }

  /** Points the batch at a (new) empty buffer. */
  reset(buf: Uint8Array): void {
    if (buf !== this.buf) {
      this.buf = buf;
      this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      this.base = ptr(buf);
    }
    this.length = 0;
  }

  /** Bytes still free. */
  get room(): number {
    return this.buf.byteLength - this.length;
  }

  /** Payload bytes a DATA frame may carry if appended now (worst-case padding included). */
  get dataRoom(): number {
    return this.room - FRAME_HEADER_SIZE - 63;
  }

  /** Appends a DATA frame carrying `payload` at stream `offset`. Caller checks dataRoom first. */
  appendData(offset: number, payload: Uint8Array): void {
    const at = this.length;
    const payloadAt = at + FRAME_HEADER_SIZE;
    const pad = payload.byteLength >= 1024 ? (ptr(payload) - (this.base + payloadAt)) & 63 : 0;
    writeFrameHeader(this.view, at, FRAME_DATA, 0, pad, payload.byteLength, offset);
    // Zeros: the pooled buffer holds what other sessions' batches left there, which is not this peer's.
    if (pad > 0) this.buf.fill(0, payloadAt, payloadAt + pad);
    this.buf.set(payload, payloadAt + pad);
    this.length = payloadAt + pad + payload.byteLength;
  }

  /** Appends a control frame (no padding). */
  appendControl(type: number, flags: number, value: number, payload?: Uint8Array): void {
    const at = this.length;
    const len = payload?.byteLength ?? 0;
    writeFrameHeader(this.view, at, type, flags, 0, len, value);
    if (payload) this.buf.set(payload, at + FRAME_HEADER_SIZE);
    this.length = at + FRAME_HEADER_SIZE + len;
  }

  /** The filled part. */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** What a session writes frames into: a FrameBatch or a PieceBatch. */
export interface Batch {
  /** Bytes of frames so far. */
  readonly length: number;
  /** Bytes still free. */
  readonly room: number;
  /** Payload bytes a DATA frame may carry if appended now (worst-case padding included). */
  readonly dataRoom: number;
  /**
   * Starts a new batch over `buf` (a pooled buffer). `unit` (PieceBatch): about how many bytes to put
   * between the cuts it marks at frame boundaries.
   */
  reset(buf: Uint8Array, unit?: number): void;
  appendData(offset: number, payload: Uint8Array): void;
  appendControl(type: number, flags: number, value: number, payload?: Uint8Array): void;
}

/**
 * Payloads from this size on stay where they are in a PieceBatch; smaller ones are copied with the
 * headers. Each piece costs its own cipher update() (a fresh output buffer); measured on 256 KiB batches,
 * sealing 4 KiB frames as pieces took 124 µs against 79 µs copied, and they broke even at 32 KiB frames
 * (69 µs both), while 128 KiB frames took 57 µs as pieces against 68 µs copied.
 */
export const PIECE_MIN = 32 * 1024;
const ZERO_PAD = new Uint8Array(63);

/**
 * A batch as pieces (see the module comment): the frames' bytes in order are the concatenation of
 * `pieces`. Headers, padding and payloads below PIECE_MIN are written into the pooled buffer given to
 * reset() (as large as a FrameBatch's, so it holds the worst case of a batch of tiny frames), a copied
 * payload of 1 KiB or more co-aligned with its source as FrameBatch does; larger payloads are pushed as
 * the views they are, after padding that puts them at a multiple of 64 bytes in the batch (a sealer's
 * copies are co-aligned then: record.ts). Pad bytes are zero: the batch buffer is shared by all sessions,
 * and what an earlier batch left there must not reach another session's peer. Valid until the next
 * reset().
 */
export class PieceBatch implements Batch {
  length = 0;
  /** The batch's bytes, in order, once finish() was called. */
  readonly pieces: Uint8Array[] = [];
  /**
   * Offsets (ascending) where a DATA frame ended once at least `unit` bytes had gathered since the last
   * cut: where a sealing carrier ends a record, so its receiver releases whole frames as they arrive.
   */
  readonly cuts: number[] = [];
  private unit = Infinity;
  private lastCut = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  /** The buffer's address (bun:ffi), for co-aligned copies. */
  private base = 0;
  /** Bytes of `buf` used, and where the run not yet pushed as a piece starts. */
  private used = 0;
  private runStart = 0;

  constructor(readonly capacity: number) {}

  reset(buf: Uint8Array, unit = Infinity): void {
    if (buf !== this.buf) {
      this.buf = buf;
      this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      this.base = buf.byteLength > 0 ? ptr(buf) : 0;
    }
    this.length = 0;
    this.used = 0;
    this.runStart = 0;
    this.pieces.length = 0;
    this.cuts.length = 0;
    this.unit = unit;
    this.lastCut = 0;
  }

  get room(): number {
    return Math.min(this.capacity, this.buf.byteLength) - this.length;
  }

  get dataRoom(): number {
    return this.room - FRAME_HEADER_SIZE - 63;
  }

  appendData(offset: number, payload: Uint8Array): void {
    const len = payload.byteLength;
    if (len < PIECE_MIN) {
      const at = this.used + FRAME_HEADER_SIZE;
      const pad = len >= 1024 ? (ptr(payload) - (this.base + at)) & 63 : 0;
      writeFrameHeader(this.view, this.used, FRAME_DATA, 0, pad, len, offset);
      if (pad > 0) this.buf.set(ZERO_PAD.subarray(0, pad), at);
      this.buf.set(payload, at + pad);
      this.used += FRAME_HEADER_SIZE + pad + len;
      this.length += FRAME_HEADER_SIZE + pad + len;
      this.maybeCut();
      return;
    }
    const pad = (64 - ((this.length + FRAME_HEADER_SIZE) & 63)) & 63;
    writeFrameHeader(this.view, this.used, FRAME_DATA, 0, pad, len, offset);
    this.buf.set(ZERO_PAD.subarray(0, pad), this.used + FRAME_HEADER_SIZE);
    this.used += FRAME_HEADER_SIZE + pad;
    this.pushRun();
    this.pieces.push(payload);
    this.length += FRAME_HEADER_SIZE + pad + len;
    this.maybeCut();
  }

  private maybeCut(): void {
    if (this.length - this.lastCut < this.unit) return;
    this.cuts.push(this.length);
    this.lastCut = this.length;
  }

  appendControl(type: number, flags: number, value: number, payload?: Uint8Array): void {
    const len = payload?.byteLength ?? 0;
    writeFrameHeader(this.view, this.used, type, flags, 0, len, value);
    if (payload) this.buf.set(payload, this.used + FRAME_HEADER_SIZE);
    this.used += FRAME_HEADER_SIZE + len;
    this.length += FRAME_HEADER_SIZE + len;
  }

  /** The pooled buffer given to reset(). */
  get buffer(): Uint8Array {
    return this.buf;
  }

  /** Ends the batch: `pieces` then holds all of it. */
  finish(): readonly Uint8Array[] {
    this.pushRun();
    return this.pieces;
  }

  private pushRun(): void {
    if (this.used > this.runStart) this.pieces.push(this.buf.subarray(this.runStart, this.used));
    this.runStart = this.used;
  }
}

const pools = new Map<number, BufferPool>();
const batches = new Map<BufferPool, { batch: FrameBatch; pieces: PieceBatch }>();

/**
 * The pool of `size`-byte buffers and the one FrameBatch and one PieceBatch over it that every session
 * with that buffer size shares: a session fills and sends a batch synchronously, so a batch holds a
 * buffer only then.
 */
export function sharedBatch(size: number): { pool: BufferPool; batch: FrameBatch; pieces: PieceBatch } {
  let pool = pools.get(size);
  if (!pool) pools.set(size, (pool = new BufferPool(size)));
  let both = batches.get(pool);
  if (!both) batches.set(pool, (both = { batch: new FrameBatch(new Uint8Array(0)), pieces: new PieceBatch(size) }));
  return { pool, ...both };
}
