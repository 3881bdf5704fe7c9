/**
 * ResendQueue: the stream ranges to send again, because the stripe that carried them died or held up
 * delivery. Pure. Ranges are kept sorted by offset and merged where they overlap or touch, so a range
 * queued twice (rescued from a stalling stripe, then lost when it dies) is sent once. Everything lies
 * in [acked, sent end), so the queue never spans more than the peer's window.
 */

/** Sorted, disjoint [start, end) stream ranges; the first one is sent first. */
export class ResendQueue {
  // Parallel arrays from `head` on: starts[i] < ends[i] < starts[i + 1].
  private starts: number[] = [];
  private ends: number[] = [];
  private head = 0;

  /** Number of disjoint ranges queued. */
  get length(): number {
    return this.starts.length - this.head;
  }

  /** Total bytes queued. */
  get bytes(): number {
    let n = 0;
    for (let i = this.head; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  /** Start of the first range (only when length > 0). */
  get start(): number {
    return this.starts[this.head]!;
  }

  /** End of the first range (only when length > 0). */
  get end(): number {
    return this.ends[this.head]!;
  }

  /** Queues [start, end), merging it with the ranges it overlaps or touches. Empty ranges are ignored. */
  add(start: number, end: number): void {
    if (end <= start) return;
    const n = this.starts.length;
    // Fast path: after everything queued (a stripe's frames mostly go out in offset order).
    if (this.head === n || start > this.ends[n - 1]!) {
      this.starts.push(start);
      this.ends.push(end);
      return;
    }
    // First range that ends at or after `start`: the new one goes before it or merges with it.
    let lo = this.head;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! < start) lo = mid + 1;
      else hi = mid;
    }
    if (this.starts[lo]! > end) {
      this.starts.splice(lo, 0, start);
      this.ends.splice(lo, 0, end);
      return;
    }
    let j = lo;
    let last = end;
    while (j < n && this.starts[j]! <= end) {
      if (this.ends[j]! > last) last = this.ends[j]!;
      j++;
    }
    this.starts[lo] = Math.min(start, this.starts[lo]!);
    this.ends[lo] = last;
    if (j > lo + 1) {
      this.starts.splice(lo + 1, j - lo - 1);
      this.ends.splice(lo + 1, j - lo - 1);
    }
  }

  /** Drops what lies below `acked` (the peer has it): whole ranges, and the front of the first. */
  trim(acked: number): void {
    const n = this.starts.length;
    if (this.head === n) return;
    while (this.head < n && this.ends[this.head]! <= acked) this.head++;
    if (this.head === n) {
      this.clear();
      return;
    }
    if (this.starts[this.head]! < acked) this.starts[this.head] = acked;
    if (this.head > 64 && this.head * 2 > n) {
      this.starts = this.starts.slice(this.head);
      this.ends = this.ends.slice(this.head);
      this.head = 0;
    }
  }

  /** The first range has been sent up to `offset` (within it): it now starts there, or is gone. */
  consume(offset: number): void {
    if (offset >= this.ends[this.head]!) {
      this.head++;
      if (this.head === this.starts.length) this.clear();
    } else {
      this.starts[this.head] = offset;
    }
  }

  /** Drops everything. */
  clear(): void {
    this.starts.length = 0;
    this.ends.length = 0;
    this.head = 0;
  }
}
