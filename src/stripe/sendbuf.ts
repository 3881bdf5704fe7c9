/**
 * SendBuffer: the sender's store of stream bytes from the last acknowledged offset to the end of what
 * the local socket produced. Pure. Chunks are kept as received (zero-copy) until a cumulative ack covers
 * them, so any unacknowledged range can be re-sent on another stripe.
 */

/** Unacknowledged stream bytes, kept as the app's chunks: read by offset, released by cumulative acks. */
export class SendBuffer {
  /** Stream offset of the first byte still held (everything below is acknowledged). */
  acked = 0;
  /** Stream offset just past the last byte appended. */
  end = 0;

  private chunks: Uint8Array[] = [];
  private starts: number[] = [];
  private head = 0;

  /** Bytes held: appended and not yet acknowledged. */
  get bytes(): number {
    return this.end - this.acked;
  }

  /** Appends a chunk (kept, not copied). */
  append(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.starts.push(this.end);
    this.end += chunk.byteLength;
  }

  /**
   * Returns up to `max` bytes starting at stream `offset`, from a single chunk (a frame never spans two
   * chunks, so this never copies). `offset` must lie in [acked, end).
   */
  read(offset: number, max: number): Uint8Array {
    if (offset < this.acked || offset >= this.end) {
      throw new RangeError(`read at ${offset} outside [${this.acked}, ${this.end})`);
    }
    const i = this.find(offset);
    const chunk = this.chunks[i]!;
    const from = offset - this.starts[i]!;
    return chunk.subarray(from, Math.min(chunk.byteLength, from + max));
  }

  /** Drops everything below `offset` (a cumulative ack). Returns the bytes released. */
  ack(offset: number): number {
    if (offset <= this.acked) return 0;
    if (offset > this.end) throw new RangeError(`ack ${offset} beyond sent end ${this.end}`);
    const released = offset - this.acked;
    this.acked = offset;
    while (this.head < this.chunks.length && this.starts[this.head]! + this.chunks[this.head]!.byteLength <= offset) {
      this.chunks[this.head] = EMPTY;
      this.head++;
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.starts = this.starts.slice(this.head);
      this.head = 0;
    }
    return released;
  }

  /** Drops everything (session teardown). */
  clear(): void {
    this.chunks = [];
    this.starts = [];
    this.head = 0;
    this.acked = this.end;
  }

  private find(offset: number): number {
    let lo = this.head;
    let hi = this.chunks.length - 1;
    // Reads are almost always near the front (resends) or the back (new data): check both first.
    if (this.starts[hi]! <= offset) return hi;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

const EMPTY = new Uint8Array(0);
