/**
 * ReorderBuffer: puts byte ranges that arrive out of order (from several stripes) back into one stream.
 * Pure; no sockets. Ranges may be duplicated, overlapping or split anywhere: a stream byte is delivered
 * exactly once, in order. Memory is bounded by the window: a range ending beyond `delivered + window`
 * is a protocol error (the sender never has more than a window unacknowledged).
 */

import { ProtocolError } from "../errors.ts";

// Out-of-order ranges this small are copied instead of kept, so a few stray bytes cannot pin a whole
// 512 KiB receive chunk in memory.
const COPY_BELOW = 16 * 1024;

/** See module comment. */
export class ReorderBuffer {
  /** Next stream offset the consumer will receive: everything below was handed out by shift(). */
  delivered = 0;
  /** End of the contiguous data available to shift(). */
  contiguous = 0;
  /** Payload bytes held (in order and out of order), for limits and tests. */
  bufferedBytes = 0;
  /** Highest bufferedBytes seen, for tests and statistics. */
  peakBufferedBytes = 0;

  // Segments sorted by offset, non-overlapping, all at or beyond `delivered`.
  private offsets: number[] = [];
  private chunks: Uint8Array[] = [];
  private head = 0;

  constructor(readonly window: number) {}

  /** Number of stored segments (in order and out of order). */
  get segments(): number {
    return this.offsets.length - this.head;
  }

  /** Adds `bytes` found at stream `offset`. Returns true when new in-order data became available. */
  insert(offset: number, bytes: Uint8Array): boolean {
    let len = bytes.byteLength;
    if (len === 0) return false;
    const limit = this.delivered + this.window;
    if (offset + len > limit) {
      throw new ProtocolError(
        "E_WINDOW",
        `data at ${offset}+${len} beyond the receive window (delivered ${this.delivered}, window ${this.window})`,
      );
    }
    // Trim what was already received in order (duplicates are normal after a resend).
    if (offset < this.contiguous) {
      const skip = this.contiguous - offset;
      if (skip >= len) return false;
      bytes = bytes.subarray(skip);
      offset = this.contiguous;
      len -= skip;
    }
    const n = this.offsets.length;
    // Fast path: appends exactly at the end of the stored data.
    if (offset === this.contiguous && (this.head === n || this.offsets[n - 1]! + this.chunks[n - 1]!.byteLength === offset)) {
      this.push(n, offset, bytes);
      this.contiguous = offset + len;
      return true;
    }
    this.insertSlow(offset, bytes);
    return this.advance();
  }

  /** Takes the next in-order piece, or undefined when the next byte has not arrived. */
  shift(): Uint8Array | undefined {
    if (this.head === this.offsets.length || this.offsets[this.head] !== this.delivered) return undefined;
    const chunk = this.chunks[this.head]!;
    this.chunks[this.head] = EMPTY;
    this.head++;
    if (this.head > 64 && this.head * 2 > this.offsets.length) this.compact();
    this.delivered += chunk.byteLength;
    this.bufferedBytes -= chunk.byteLength;
    return chunk;
  }

  /** Drops everything held (session teardown). */
  clear(): void {
    this.offsets = [];
    this.chunks = [];
    this.head = 0;
    this.bufferedBytes = 0;
  }

  private push(at: number, offset: number, bytes: Uint8Array): void {
    if (at === this.offsets.length) {
      this.offsets.push(offset);
      this.chunks.push(bytes);
    } else {
      this.offsets.splice(at, 0, offset);
      this.chunks.splice(at, 0, bytes);
    }
    this.bufferedBytes += bytes.byteLength;
    if (this.bufferedBytes > this.peakBufferedBytes) this.peakBufferedBytes = this.bufferedBytes;
  }

  /** Stores a range out of order, skipping the parts other segments already cover. */
  private insertSlow(offset: number, bytes: Uint8Array): void {
    if (bytes.byteLength < COPY_BELOW && bytes.buffer.byteLength > 4 * bytes.byteLength) bytes = bytes.slice();
    const end = offset + bytes.byteLength;
    // First segment that ends after `offset`.
    let i = this.lowerBound(offset);
    while (offset < end) {
      if (i === this.offsets.length) {
        this.push(i, offset, bytes);
        return;
      }
      const segStart = this.offsets[i]!;
      const segEnd = segStart + this.chunks[i]!.byteLength;
      if (segStart > offset) {
        // A gap before segment i: store the part of the new range that fits in it.
        const take = Math.min(end, segStart) - offset;
        this.push(i, offset, bytes.subarray(0, take));
        i++;
        bytes = bytes.subarray(take);
        offset += take;
        continue;
      }
      // Segment i covers `offset`: skip the overlap.
      const skip = Math.min(segEnd, end) - offset;
      bytes = bytes.subarray(skip);
      offset += skip;
      i++;
    }
  }

  /** Index of the first stored segment whose end lies beyond `offset`. */
  private lowerBound(offset: number): number {
    let lo = this.head;
    let hi = this.offsets.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.offsets[mid]! + this.chunks[mid]!.byteLength <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Moves `contiguous` over segments that now follow it directly. */
  private advance(): boolean {
    const before = this.contiguous;
    let i = this.lowerBound(this.contiguous);
    while (i < this.offsets.length && this.offsets[i] === this.contiguous) {
      this.contiguous += this.chunks[i]!.byteLength;
      i++;
    }
    return this.contiguous > before;
  }

  private compact(): void {
    this.offsets = this.offsets.slice(this.head);
    this.chunks = this.chunks.slice(this.head);
    this.head = 0;
  }
}

const EMPTY = new Uint8Array(0);
