/**
 * ReorderBuffer: puts byte ranges that arrive out of order (from several stripes) back into one stream.
 * Pure; no sockets. Ranges may be duplicated, overlapping or split anywhere: a stream byte is delivered
 * exactly once, in order.
 *
 * Two limits, both protocol errors that end the session (RESET code 3):
 * - E_WINDOW: a range ending beyond `delivered + window` (the sender never has more than a window
 *   unacknowledged, so payload held is at most the window).
 * - E_REORDER_MEMORY: what the held data really costs — every stored segment is charged a fixed
 *   SEGMENT_OVERHEAD plus the buffer it keeps alive (its own copy, or the whole receive chunk a
 *   zero-copy view pins, counted once however many views share it) — beyond `memoryLimit`
 *   (default 2 × window + 128 KiB, see reorderMemoryLimit). Tiny fragments scattered over the window
 *   hit it: 1-byte fragments at every other offset are refused after 105,267 of them with a 16 MiB
 *   window, instead of costing ~200 bytes of heap each without bound.
 *
 * How the cost stays near the payload for a legitimate sender:
 * - Coalescing: a piece under COPY_BELOW that continues the segment before it is copied onto the end of
 *   that segment's own growable buffer, so a stream cut into tiny frames (a 1-byte slicer, small app
 *   writes) is held as a few large segments, however the stripes interleave their arrival.
 * - Views only while affordable: a larger piece is kept as a view of its receive chunk (zero copy)
 *   while the memory charge stays within half the limit; beyond that it is copied, so views cannot
 *   pin many times their payload. In-order data into an empty buffer (the steady state: the consumer
 *   keeps up) is always a view when affordable: the fast path does not copy.
 *
 * Segments live in a two-level sorted list (blocks of at most 2 × BLOCK segments): finding a position
 * is a binary search, inserting moves at most one block, and a split moves block pointers once per
 * BLOCK inserts, so an insert costs O(log n + BLOCK) whatever the arrival order (the single sorted
 * array it replaces moved every later segment: 600K fragments took 9.9 s).
 */

import { ProtocolError } from "../errors.ts";

/** Pieces smaller than this are copied (and coalesced) rather than kept as views of a receive chunk. */
export const COPY_BELOW = 16 * 1024;
/**
 * Memory charged for each stored segment besides its buffer: the segment record, its slot in the
 * sorted list and the typed-array object. Measured on Bun 1.4.5 (bench/reorder.bench.ts): a 1-byte
 * fragment with its 64-byte copy takes ~180 bytes of heap and ~310 of RSS; it is charged 256 + 64.
 */
export const SEGMENT_OVERHEAD = 256;
/** Memory allowed beyond 2 × window: room for a few segments even when the window is tiny. */
export const MEMORY_SLACK = 128 * 1024;

/** The default memory limit of a reorder buffer with `window`: payload plus as much again for overheads. */
export function reorderMemoryLimit(window: number): number {
  return 2 * window + MEMORY_SLACK;
}

/** Smallest buffer a coalescing segment starts with; it grows by a quarter at a time up to OWNED_MAX. */
const OWNED_MIN = 64;
/** Largest coalescing buffer: beyond this a new segment starts. */
const OWNED_MAX = 64 * 1024;
/** Segments per block: a block splits in two when it reaches 2 × BLOCK. */
const BLOCK = 64;

/** A stored run of stream bytes. `owned`: `buf` is our own copy, with spare room after `len`. */
interface Segment {
  off: number;
  len: number;
  buf: Uint8Array;
  owned: boolean;
}

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
  /** Memory charged for what is held: see the module comment. */
  memoryBytes = 0;
  /** Highest memoryBytes seen. */
  peakMemoryBytes = 0;
  /** Beyond this memoryBytes an insert fails with E_REORDER_MEMORY. */
  readonly memoryLimit: number;

  // Segments sorted by offset, non-overlapping, all at or beyond `delivered`; no block is empty.
  private blocks: Segment[][] = [];
  private count = 0;
  // Receive chunks pinned by views, with how many segments view each (charged once per chunk).
  private pins = new Map<ArrayBufferLike, number>();

  constructor(
    readonly window: number,
    memoryLimit = reorderMemoryLimit(window),
  ) {
    this.memoryLimit = memoryLimit;
  }

  /** Number of stored segments (in order and out of order). */
  get segments(): number {
    return this.count;
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
    const last = this.last();
    if (offset === this.contiguous && (last === undefined || last.off + last.len === offset)) {
      // Fast path: appends exactly at the end of everything held.
      this.place(this.blocks.length, 0, last, offset, bytes, this.count === 0);
      this.contiguous = offset + len;
      this.checkMemory();
      return true;
    }
    this.insertSlow(offset, bytes);
    const advanced = this.advance();
    this.checkMemory();
    return advanced;
  }

  /** Takes the next in-order piece, or undefined when the next byte has not arrived. */
  shift(): Uint8Array | undefined {
    const first = this.blocks[0];
    const seg = first?.[0];
    if (seg === undefined || seg.off !== this.delivered) return undefined;
    first!.shift();
    if (first!.length === 0) this.blocks.shift();
    this.count--;
    this.release(seg);
    this.delivered += seg.len;
    this.bufferedBytes -= seg.len;
    return seg.owned && seg.len !== seg.buf.byteLength ? seg.buf.subarray(0, seg.len) : seg.buf;
  }

  /** Drops everything held (session teardown): the segments, their buffers and the pin table. */
  clear(): void {
    this.blocks = [];
    this.pins = new Map();
    this.count = 0;
    this.bufferedBytes = 0;
    this.memoryBytes = 0;
  }

  // --- placing bytes -------------------------------------------------------------------------------

  /**
   * Stores `bytes` at `offset`, a free range whose stored predecessor is `pred`, at list position
   * (b, i): continues `pred` when the piece is small and adjacent, otherwise as a new segment.
   * `viewAny`: in-order data into an empty buffer, kept as a view whatever its size (zero copy).
   */
  private place(b: number, i: number, pred: Segment | undefined, offset: number, bytes: Uint8Array, viewAny = false): void {
    const len = bytes.byteLength;
    this.bufferedBytes += len;
    if (this.bufferedBytes > this.peakBufferedBytes) this.peakBufferedBytes = this.bufferedBytes;
    if (len < COPY_BELOW && pred !== undefined && pred.off + pred.len === offset && pred.len + len <= OWNED_MAX) {
      if (pred.owned || pred.len < COPY_BELOW) {
        this.extend(pred, bytes);
        this.mergeNext(pred, b, i);
        return;
      }
    }
    let seg: Segment;
    // A view when the piece is large, or in order into an empty buffer (the consumer keeps up), and
    // only while what it pins is affordable; otherwise a copy of its own.
    if ((len >= COPY_BELOW || viewAny) && this.canPin(bytes)) {
      seg = { off: offset, len, buf: bytes, owned: false };
      this.pin(bytes.buffer);
    } else {
      const buf = new Uint8Array(len < COPY_BELOW ? Math.max(len, OWNED_MIN) : len);
      buf.set(bytes);
      seg = { off: offset, len, buf, owned: true };
      this.charge(buf.byteLength);
    }
    this.charge(SEGMENT_OVERHEAD);
    this.count++;
    this.insertAt(b, i, seg);
  }

  /** Appends `bytes` to `seg`'s own buffer, turning a view into a copy and growing the buffer as needed. */
  private extend(seg: Segment, bytes: Uint8Array): void {
    const need = seg.len + bytes.byteLength;
    if (!seg.owned || need > seg.buf.byteLength) {
      // Grow by at least a quarter: amortised few copies per byte, at most a quarter unused.
      const cap = Math.min(OWNED_MAX, Math.max(need, OWNED_MIN, seg.owned ? seg.buf.byteLength + (seg.buf.byteLength >>> 2) : 0));
      const buf = new Uint8Array(cap);
      buf.set(seg.len === seg.buf.byteLength ? seg.buf : seg.buf.subarray(0, seg.len));
      if (seg.owned) this.charge(-seg.buf.byteLength);
      else this.unpin(seg.buf.buffer);
      this.charge(cap);
      seg.buf = buf;
      seg.owned = true;
    }
    seg.buf.set(bytes, seg.len);
    seg.len = need;
  }

  /**
   * After `pred` grew up to the segment at (b, i), moves that segment's bytes into `pred` too when it
   * is no larger (each byte is then copied at most log2(OWNED_MAX / OWNED_MIN) times this way).
   */
  private mergeNext(pred: Segment, b: number, i: number): void {
    const next = this.blocks[b]?.[i];
    if (next === undefined || next.off !== pred.off + pred.len || next.len > pred.len || pred.len + next.len > OWNED_MAX) return;
    const block = this.blocks[b]!;
    block.splice(i, 1);
    if (block.length === 0) this.blocks.splice(b, 1);
    this.count--;
    this.release(next);
    this.extend(pred, next.owned ? next.buf.subarray(0, next.len) : next.buf);
  }

  /** Stores a range out of order, skipping the parts other segments already cover. */
  private insertSlow(offset: number, bytes: Uint8Array): void {
    const end = offset + bytes.byteLength;
    // First segment that ends after `offset`, and the one before it.
    let [b, i] = this.lowerBound(offset);
    let pred = this.before(b, i);
    while (offset < end) {
      const seg = this.blocks[b]?.[i];
      if (seg === undefined || seg.off > offset) {
        // A gap before `seg` (or after everything): store the part of the new range that fits in it.
        const take = (seg === undefined ? end : Math.min(end, seg.off)) - offset;
        this.place(b, i, pred, offset, take === bytes.byteLength ? bytes : bytes.subarray(0, take));
        bytes = bytes.subarray(take);
        offset += take;
        if (offset >= end) return;
        // Continue after the stored piece (positions move when segments are added or merged).
        [b, i] = this.lowerBound(offset);
        continue;
      }
      // `seg` covers `offset`: skip the overlap.
      const skip = Math.min(seg.off + seg.len, end) - offset;
      bytes = bytes.subarray(skip);
      offset += skip;
      pred = seg;
      if (++i === this.blocks[b]!.length) {
        b++;
        i = 0;
      }
    }
  }

  /** Moves `contiguous` over segments that now reach it (one may have grown across it). */
  private advance(): boolean {
    const before = this.contiguous;
    let [b, i] = this.lowerBound(this.contiguous);
    for (let seg = this.blocks[b]?.[i]; seg !== undefined && seg.off <= this.contiguous; ) {
      this.contiguous = seg.off + seg.len;
      if (++i === this.blocks[b]!.length) {
        b++;
        i = 0;
      }
      seg = this.blocks[b]?.[i];
    }
    return this.contiguous > before;
  }

  // --- memory accounting ---------------------------------------------------------------------------

  private checkMemory(): void {
    if (this.memoryBytes <= this.memoryLimit) return;
    throw new ProtocolError(
      "E_REORDER_MEMORY",
      `reorder buffer would take ${this.memoryBytes} bytes for ${this.bufferedBytes} bytes in ${this.count} segments ` +
        `(limit ${this.memoryLimit}, window ${this.window}): fragments too small or too scattered`,
    );
  }

  private charge(bytes: number): void {
    this.memoryBytes += bytes;
    if (this.memoryBytes > this.peakMemoryBytes) this.peakMemoryBytes = this.memoryBytes;
  }

  /** A view may pin its chunk if that is already pinned, or if the charge stays within half the limit. */
  private canPin(bytes: Uint8Array): boolean {
    return this.pins.has(bytes.buffer) || this.memoryBytes + SEGMENT_OVERHEAD + bytes.buffer.byteLength <= this.memoryLimit / 2;
  }

  private pin(buffer: ArrayBufferLike): void {
    const n = this.pins.get(buffer);
    if (n === undefined) this.charge(buffer.byteLength);
    this.pins.set(buffer, (n ?? 0) + 1);
  }

  private unpin(buffer: ArrayBufferLike): void {
    const n = this.pins.get(buffer)!;
    if (n > 1) {
      this.pins.set(buffer, n - 1);
      return;
    }
    this.pins.delete(buffer);
    this.memoryBytes -= buffer.byteLength;
  }

  /** Gives back what a segment leaving the buffer was charged. */
  private release(seg: Segment): void {
    this.memoryBytes -= SEGMENT_OVERHEAD;
    if (seg.owned) this.memoryBytes -= seg.buf.byteLength;
    else this.unpin(seg.buf.buffer);
  }

  // --- the two-level sorted list -------------------------------------------------------------------

  private last(): Segment | undefined {
    const block = this.blocks[this.blocks.length - 1];
    return block?.[block.length - 1];
  }

  /** The segment before position (b, i), if any. */
  private before(b: number, i: number): Segment | undefined {
    if (i > 0) return this.blocks[b]![i - 1];
    const prev = this.blocks[b - 1];
    return prev?.[prev.length - 1];
  }

  /** Position (block, index) of the first segment whose end lies beyond `offset`; past the end if none. */
  private lowerBound(offset: number): [number, number] {
    const blocks = this.blocks;
    let lo = 0;
    let hi = blocks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const block = blocks[mid]!;
      const lastSeg = block[block.length - 1]!;
      if (lastSeg.off + lastSeg.len <= offset) lo = mid + 1;
      else hi = mid;
    }
    if (lo === blocks.length) return [lo, 0];
    const block = blocks[lo]!;
    let a = 0;
    let z = block.length;
    while (a < z) {
      const mid = (a + z) >>> 1;
      const seg = block[mid]!;
      if (seg.off + seg.len <= offset) a = mid + 1;
      else z = mid;
    }
    return [lo, a];
  }

  /** Inserts `seg` at position (b, i); a position past the last block appends to the last block. */
  private insertAt(b: number, i: number, seg: Segment): void {
    const blocks = this.blocks;
    if (blocks.length === 0) {
      blocks.push([seg]);
      return;
    }
    if (b === blocks.length) {
      b--;
      i = blocks[b]!.length;
    }
    const block = blocks[b]!;
    if (i === block.length) block.push(seg);
    else block.splice(i, 0, seg);
    if (block.length >= 2 * BLOCK) blocks.splice(b + 1, 0, block.splice(BLOCK));
  }
}
