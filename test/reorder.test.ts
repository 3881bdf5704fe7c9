/**
 * ReorderBuffer and SendBuffer: the pure stores either side of the stripes. No sockets.
 *
 * Property tests use fast-check; its failure message prints the seed and path to replay. Set
 * TEST_SEED=<seed> to rerun a failing seed.
 */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { ReorderBuffer } from "../src/stripe/reorder.ts";
import { SendBuffer } from "../src/stripe/sendbuf.ts";
import { expectProtocolError } from "./helpers/util.ts";

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) | 0 : (Math.random() * 2 ** 31) | 0;
/** Arrays use size "max": fast-check's default "small" size keeps them to about ten elements. */
/** fast-check parameters: seeded, and the seed printed on failure (fast-check also prints it). */
function params(numRuns: number): fc.Parameters<unknown> {
  return {
    seed: SEED,
    numRuns,
    reporter(details) {
      if (details.failed) {
        console.error(`property failed: rerun with TEST_SEED=${details.seed} (path ${details.counterexamplePath})`);
        throw new Error(fc.defaultReportMessage(details) ?? "property failed");
      }
    },
  };
}

function stream(n: number, salt = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >>> 8) * 7 + salt) & 0xff);
}

/** Shifts everything available and returns it joined. */
function drain(rb: ReorderBuffer): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let c = rb.shift(); c !== undefined; c = rb.shift()) parts.push(c);
  return Buffer.concat(parts);
}

// --- ReorderBuffer -------------------------------------------------------------------------------

describe("ReorderBuffer", () => {
  test("delivers in-order ranges as they arrive", () => {
    const s = stream(1000);
    const rb = new ReorderBuffer(1000);
    expect(rb.shift()).toBeUndefined();
    expect(rb.insert(0, s.subarray(0, 300))).toBe(true);
    expect(rb.contiguous).toBe(300);
    expect(rb.bufferedBytes).toBe(300);
    expect(drain(rb)).toEqual(s.subarray(0, 300));
    expect(rb.delivered).toBe(300);
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.insert(300, s.subarray(300, 1000))).toBe(true);
    expect(drain(rb)).toEqual(s.subarray(300));
    expect(rb.delivered).toBe(1000);
    expect(rb.segments).toBe(0);
  });

  test("holds out-of-order ranges until the gap before them fills", () => {
    const s = stream(900);
    const rb = new ReorderBuffer(900);
    expect(rb.insert(600, s.subarray(600, 900))).toBe(false);
    expect(rb.insert(300, s.subarray(300, 600))).toBe(false);
    expect(rb.shift()).toBeUndefined();
    expect(rb.contiguous).toBe(0);
    expect(rb.bufferedBytes).toBe(600);
    expect(rb.insert(0, s.subarray(0, 300))).toBe(true);
    expect(rb.contiguous).toBe(900);
    expect(drain(rb)).toEqual(s);
    expect(rb.bufferedBytes).toBe(0);
  });

  test("delivers each byte once when ranges are shuffled and duplicated", () => {
    const s = stream(64 * 1024);
    const ranges: [number, number][] = [];
    for (let o = 0; o < s.byteLength; o += 1000) ranges.push([o, Math.min(o + 1000, s.byteLength)]);
    const all = [...ranges, ...ranges, ...ranges.filter((_, i) => i % 3 === 0)];
    // Deterministic shuffle (a fixed permutation is enough here; the property test randomises).
    all.sort((a, b) => ((a[0] * 2654435761) >>> 0) - ((b[0] * 2654435761) >>> 0) || a[1] - b[1]);
    const rb = new ReorderBuffer(s.byteLength);
    const out: Uint8Array[] = [];
    for (const [a, b] of all) {
      rb.insert(a, s.subarray(a, b));
      out.push(drain(rb));
    }
    expect(Buffer.concat(out)).toEqual(Buffer.from(s));
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.segments).toBe(0);
  });

  test("overlapping ranges fill only the gaps between what is held", () => {
    const s = stream(100);
    const rb = new ReorderBuffer(100);
    rb.insert(10, s.subarray(10, 20));
    rb.insert(30, s.subarray(30, 40));
    rb.insert(50, s.subarray(50, 60));
    expect(rb.bufferedBytes).toBe(30);
    // Covers [5, 55): new bytes are [5,10), [20,30), [40,50).
    expect(rb.insert(5, s.subarray(5, 55))).toBe(false);
    expect(rb.bufferedBytes).toBe(30 + 5 + 10 + 10);
    expect(rb.insert(0, s.subarray(0, 8))).toBe(true);
    expect(rb.contiguous).toBe(60);
    expect(rb.bufferedBytes).toBe(60);
    // Straddles the contiguous end: only [60, 70) is new.
    expect(rb.insert(55, s.subarray(55, 70))).toBe(true);
    expect(rb.bufferedBytes).toBe(70);
    expect(drain(rb)).toEqual(s.subarray(0, 70));
    expect(rb.bufferedBytes).toBe(0);
  });

  test("ranges already delivered, or already contiguous, are dropped as duplicates", () => {
    const s = stream(100);
    const rb = new ReorderBuffer(100);
    rb.insert(0, s.subarray(0, 50));
    expect(rb.insert(10, s.subarray(10, 40))).toBe(false); // inside contiguous, not yet delivered
    expect(rb.bufferedBytes).toBe(50);
    drain(rb);
    expect(rb.insert(0, s.subarray(0, 50))).toBe(false); // below delivered
    expect(rb.insert(20, s.subarray(20, 30))).toBe(false);
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.shift()).toBeUndefined();
    expect(rb.insert(40, s.subarray(40, 60))).toBe(true); // half duplicate, half new
    expect(drain(rb)).toEqual(s.subarray(50, 60));
  });

  test("an empty range is ignored", () => {
    const rb = new ReorderBuffer(10);
    expect(rb.insert(0, new Uint8Array(0))).toBe(false);
    expect(rb.insert(10 ** 9, new Uint8Array(0))).toBe(false); // even far beyond the window
    expect(rb.segments).toBe(0);
  });

  test("a range split into single bytes, in reverse order, arrives whole", () => {
    const s = stream(300);
    const rb = new ReorderBuffer(300);
    for (let i = 299; i >= 1; i--) expect(rb.insert(i, s.subarray(i, i + 1))).toBe(false);
    expect(rb.bufferedBytes).toBe(299);
    expect(rb.insert(0, s.subarray(0, 1))).toBe(true);
    expect(drain(rb)).toEqual(s);
  });

  test("data ending beyond delivered + window is E_WINDOW; up to the edge is accepted", () => {
    const s = stream(300);
    const rb = new ReorderBuffer(100);
    expectProtocolError(() => rb.insert(0, s.subarray(0, 101)), "E_WINDOW");
    expectProtocolError(() => rb.insert(100, s.subarray(100, 101)), "E_WINDOW");
    expectProtocolError(() => rb.insert(99, s.subarray(99, 101)), "E_WINDOW");
    expect(rb.insert(90, s.subarray(90, 100))).toBe(false);
    expect(rb.insert(0, s.subarray(0, 90))).toBe(true);
    // The window is counted from what the consumer took (delivered), not from what arrived (contiguous).
    expectProtocolError(() => rb.insert(100, s.subarray(100, 101)), "E_WINDOW");
    expect(rb.bufferedBytes).toBe(100);
    drain(rb);
    expect(rb.insert(100, s.subarray(100, 200))).toBe(true);
    expectProtocolError(() => rb.insert(200, s.subarray(200, 201)), "E_WINDOW");
    drain(rb);
    expect(rb.insert(150, s.subarray(150, 300))).toBe(true);
    expect(drain(rb)).toEqual(s.subarray(200, 300));
  });

  test("a rejected range leaves the buffer as it was", () => {
    const s = stream(200);
    const rb = new ReorderBuffer(100);
    rb.insert(50, s.subarray(50, 60));
    expectProtocolError(() => rb.insert(95, s.subarray(95, 105)), "E_WINDOW");
    expect(rb.bufferedBytes).toBe(10);
    expect(rb.segments).toBe(1);
    rb.insert(0, s.subarray(0, 50));
    expect(drain(rb)).toEqual(s.subarray(0, 60));
  });

  test("bufferedBytes and peakBufferedBytes count exactly what is held", () => {
    const s = stream(1000);
    const rb = new ReorderBuffer(1000);
    rb.insert(500, s.subarray(500, 700));
    rb.insert(600, s.subarray(600, 800)); // 100 new
    rb.insert(100, s.subarray(100, 200));
    expect(rb.bufferedBytes).toBe(400);
    rb.insert(0, s.subarray(0, 100));
    expect(rb.bufferedBytes).toBe(500);
    expect(rb.peakBufferedBytes).toBe(500);
    const first = rb.shift()!;
    expect(rb.bufferedBytes).toBe(500 - first.byteLength);
    drain(rb);
    expect(rb.bufferedBytes).toBe(300); // [500, 800) waits for [200, 500)
    expect(rb.peakBufferedBytes).toBe(500);
    rb.clear();
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.segments).toBe(0);
  });

  test("keeps working after thousands of segments come and go (internal compaction)", () => {
    const n = 20_000;
    const s = stream(n);
    const rb = new ReorderBuffer(n);
    const out: Uint8Array[] = [];
    // Pairs in swapped order: odd byte first (out of order), then the even byte that unlocks both.
    for (let i = 0; i < n; i += 2) {
      rb.insert(i + 1, s.subarray(i + 1, i + 2));
      rb.insert(i, s.subarray(i, i + 1));
      if (i % 1000 === 0) out.push(drain(rb));
    }
    out.push(drain(rb));
    expect(Buffer.concat(out)).toEqual(Buffer.from(s));
    expect(rb.segments).toBe(0);
  });

  test("property: random ranges, duplicated, split and shuffled, with shifts interleaved, deliver exactly the stream prefix", () => {
    const scenario = fc.record({
      stream: fc.uint8Array({ minLength: 1, maxLength: 3000, size: "max" }),
      cuts: fc.array(fc.nat(), { maxLength: 40, size: "max" }),
      extraCopies: fc.array(fc.nat({ max: 2 }), { maxLength: 41, size: "max" }),
      splits: fc.array(fc.array(fc.nat(), { maxLength: 3, size: "max" }), { maxLength: 120, size: "max" }),
      overlaps: fc.array(fc.tuple(fc.nat(), fc.nat({ max: 400 })), { maxLength: 10, size: "max" }),
      order: fc.array(fc.nat(), { maxLength: 200, size: "max" }),
      shifts: fc.array(fc.nat({ max: 3 }), { maxLength: 200, size: "max" }),
      // Sometimes hand the buffer copies, sometimes views into one big array (both storage paths).
      copy: fc.boolean(),
      // Embed the stream at a large offset sometimes: offsets are not small integers in real sessions.
      base: fc.constantFrom(0, 2 ** 40 + 3),
    });
    fc.assert(
      fc.property(scenario, (sc) => {
        const s = sc.stream;
        const len = s.byteLength;
        const base = sc.base;
        // Ranges that tile the stream.
        const points = [...new Set(sc.cuts.map((c) => c % len).filter((c) => c > 0))].sort((a, b) => a - b);
        const tiles: [number, number][] = [];
        let prev = 0;
        for (const p of [...points, len]) {
          tiles.push([prev, p]);
          prev = p;
        }
        // Each tile once or more, plus some arbitrary overlapping ranges.
        let pieces: [number, number][] = [];
        tiles.forEach((t, i) => {
          for (let c = 0; c <= (sc.extraCopies[i] ?? 0); c++) pieces.push(t);
        });
        for (const [start, n] of sc.overlaps) {
          const a = start % len;
          pieces.push([a, Math.min(len, a + 1 + n)]);
        }
        // Split some pieces further.
        pieces = pieces.flatMap(([a, b], i) => {
          const at = [...new Set((sc.splits[i] ?? []).map((x) => a + (x % (b - a))).filter((x) => x > a))].sort((x, y) => x - y);
          const out: [number, number][] = [];
          let p = a;
          for (const x of [...at, b]) {
            out.push([p, x]);
            p = x;
          }
          return out;
        });
        // Shuffle by sort keys (stable for equal keys).
        const keyed = pieces.map((p, i) => ({ p, k: sc.order[i] ?? i }));
        keyed.sort((x, y) => x.k - y.k);

        const rb = new ReorderBuffer(len);
        // Start the buffer at `base` as if that much had already been delivered.
        if (base > 0) {
          rb.delivered = base;
          rb.contiguous = base;
        }
        const covered = new Uint8Array(len); // model: which stream bytes have arrived
        let coveredCount = 0;
        let modelContiguous = 0;
        const out: Uint8Array[] = [];
        let outLen = 0;
        const check = (): void => {
          expect(rb.delivered - base).toBe(outLen);
          expect(rb.contiguous - base).toBe(modelContiguous);
          // Every byte that arrived at or beyond `delivered` is held, once.
          expect(rb.bufferedBytes).toBe(coveredCount - outLen);
          expect(rb.peakBufferedBytes).toBeGreaterThanOrEqual(rb.bufferedBytes);
          // Never more than arrived in order.
          expect(outLen).toBeLessThanOrEqual(modelContiguous);
        };
        keyed.forEach(({ p: [a, b] }, i) => {
          const bytes = sc.copy ? s.slice(a, b) : s.subarray(a, b);
          const before = modelContiguous;
          for (let x = a; x < b; x++) {
            if (!covered[x]) {
              covered[x] = 1;
              coveredCount++;
            }
          }
          while (modelContiguous < len && covered[modelContiguous]) modelContiguous++;
          expect(rb.insert(base + a, bytes)).toBe(modelContiguous > before);
          check();
          for (let k = sc.shifts[i] ?? 1; k > 0; k--) {
            const c = rb.shift();
            if (c === undefined) break;
            expect(c.byteLength).toBeGreaterThan(0);
            out.push(c);
            outLen += c.byteLength;
            // What came out so far is exactly the stream prefix of that length.
            expect(Buffer.from(c)).toEqual(Buffer.from(s.subarray(outLen - c.byteLength, outLen)));
            check();
          }
        });
        out.push(drain(rb));
        const all = Buffer.concat(out);
        expect(all.byteLength).toBe(len);
        expect(all).toEqual(Buffer.from(s));
        expect(rb.bufferedBytes).toBe(0);
        expect(rb.segments).toBe(0);
      }),
      params(300),
    );
  }, 120_000);

  test("property: with a small window, a range is refused with E_WINDOW exactly when it ends beyond delivered + window", () => {
    const scenario = fc.record({
      len: fc.integer({ min: 1, max: 2000 }),
      window: fc.integer({ min: 1, max: 500 }),
      ranges: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 300 })), { minLength: 1, maxLength: 150, size: "max" }),
      shifts: fc.array(fc.nat({ max: 2 }), { maxLength: 150, size: "max" }),
    });
    fc.assert(
      fc.property(scenario, ({ len, window, ranges, shifts }) => {
        const s = stream(len, window);
        const rb = new ReorderBuffer(window);
        let delivered = 0;
        const out: Uint8Array[] = [];
        ranges.forEach(([start, n], i) => {
          const a = start % len;
          const b = Math.min(len, a + n);
          if (b > delivered + window) expectProtocolError(() => rb.insert(a, s.subarray(a, b)), "E_WINDOW");
          else rb.insert(a, s.subarray(a, b));
          // Memory stays within the window.
          expect(rb.bufferedBytes).toBeLessThanOrEqual(window);
          for (let k = shifts[i] ?? 1; k > 0; k--) {
            const c = rb.shift();
            if (!c) break;
            out.push(c);
            delivered += c.byteLength;
          }
          expect(rb.delivered).toBe(delivered);
        });
        expect(Buffer.concat(out)).toEqual(Buffer.from(s.subarray(0, delivered)));
      }),
      params(300),
    );
  }, 120_000);
});

// --- SendBuffer ----------------------------------------------------------------------------------

describe("SendBuffer", () => {
  function filled(sizes: number[]): { sb: SendBuffer; chunks: Uint8Array[]; all: Uint8Array } {
    const sb = new SendBuffer();
    const all = stream(sizes.reduce((a, b) => a + b, 0));
    const chunks: Uint8Array[] = [];
    let at = 0;
    for (const n of sizes) {
      const c = all.slice(at, at + n); // each chunk its own buffer, as the socket delivers them
      chunks.push(c);
      sb.append(c);
      at += n;
    }
    return { sb, chunks, all };
  }

  test("append keeps chunks as given and tracks end and bytes", () => {
    const { sb } = filled([100, 50, 200]);
    expect(sb.acked).toBe(0);
    expect(sb.end).toBe(350);
    expect(sb.bytes).toBe(350);
    sb.append(new Uint8Array(0)); // ignored
    expect(sb.end).toBe(350);
  });

  test("read returns at most max bytes from one chunk, never spanning two, without copying", () => {
    const { sb, chunks, all } = filled([100, 50, 200]);
    const r1 = sb.read(0, 1000);
    expect(r1.byteLength).toBe(100);
    expect(r1.buffer).toBe(chunks[0]!.buffer);
    expect(sb.read(90, 1000)).toEqual(all.subarray(90, 100));
    expect(sb.read(100, 10)).toEqual(all.subarray(100, 110));
    expect(sb.read(120, 1000)).toEqual(all.subarray(120, 150));
    expect(sb.read(149, 1)).toEqual(all.subarray(149, 150));
    const r2 = sb.read(150, 1000);
    expect(r2).toEqual(all.subarray(150, 350));
    expect(r2.buffer).toBe(chunks[2]!.buffer);
    expect(sb.read(349, 5)).toEqual(all.subarray(349, 350));
  });

  test("reads outside [acked, end) throw RangeError", () => {
    const { sb } = filled([100, 50]);
    expect(() => sb.read(150, 1)).toThrow(RangeError);
    expect(() => sb.read(1000, 1)).toThrow(RangeError);
    expect(() => sb.read(-1, 1)).toThrow(RangeError);
    sb.ack(120);
    expect(() => sb.read(119, 1)).toThrow(RangeError);
    expect(() => sb.read(0, 1)).toThrow(RangeError);
    expect(sb.read(120, 100).byteLength).toBe(30);
    expect(() => new SendBuffer().read(0, 1)).toThrow(RangeError);
  });

  test("ack releases bytes below it, is cumulative, and may not pass end", () => {
    const { sb, all } = filled([100, 50, 200]);
    expect(sb.ack(30)).toBe(30);
    expect(sb.acked).toBe(30);
    expect(sb.bytes).toBe(320);
    expect(sb.ack(30)).toBe(0);
    expect(sb.ack(10)).toBe(0); // an older ack changes nothing
    expect(sb.acked).toBe(30);
    expect(sb.read(30, 1000)).toEqual(all.subarray(30, 100));
    expect(sb.ack(150)).toBe(120);
    expect(sb.read(150, 1000)).toEqual(all.subarray(150, 350));
    expect(() => sb.ack(351)).toThrow(RangeError);
    expect(sb.acked).toBe(150);
    expect(sb.ack(350)).toBe(200);
    expect(sb.bytes).toBe(0);
    expect(() => sb.read(349, 1)).toThrow(RangeError);
    sb.append(new Uint8Array([1, 2, 3]));
    expect(sb.read(350, 10)).toEqual(new Uint8Array([1, 2, 3]));
  });

  test("clear drops everything and later appends continue the stream offsets", () => {
    const { sb } = filled([100, 50]);
    sb.clear();
    expect(sb.bytes).toBe(0);
    expect(sb.acked).toBe(150);
    expect(() => sb.read(149, 1)).toThrow(RangeError);
    sb.append(new Uint8Array([9]));
    expect(sb.end).toBe(151);
    expect(sb.read(150, 1)).toEqual(new Uint8Array([9]));
  });

  test("property: reads and acks over many chunks match a flat model of the stream", () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant("append" as const), n: fc.integer({ min: 0, max: 300 }) }),
      fc.record({ t: fc.constant("read" as const), at: fc.integer({ min: -5, max: 5000 }), max: fc.integer({ min: 1, max: 400 }) }),
      fc.record({ t: fc.constant("ack" as const), by: fc.integer({ min: -10, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400, size: "max" }), (ops) => {
        const sb = new SendBuffer();
        const model: number[] = [];
        const chunkEnds: number[] = [];
        let acked = 0;
        for (const o of ops) {
          if (o.t === "append") {
            const c = Uint8Array.from({ length: o.n }, (_, i) => (model.length + i) & 0xff);
            sb.append(c);
            for (const b of c) model.push(b);
            if (o.n > 0) chunkEnds.push(model.length);
          } else if (o.t === "read") {
            const at = acked + o.at - 100;
            if (at < acked || at >= model.length) {
              expect(() => sb.read(at, o.max)).toThrow(RangeError);
              continue;
            }
            const chunkEnd = chunkEnds.find((e) => e > at)!;
            const r = sb.read(at, o.max);
            expect(r.byteLength).toBe(Math.min(o.max, chunkEnd - at));
            expect(Array.from(r)).toEqual(model.slice(at, at + r.byteLength));
          } else {
            const to = acked + o.by;
            if (to > model.length) {
              expect(() => sb.ack(to)).toThrow(RangeError);
              continue;
            }
            expect(sb.ack(to)).toBe(Math.max(0, to - acked));
            acked = Math.max(acked, to);
          }
          expect(sb.acked).toBe(acked);
          expect(sb.end).toBe(model.length);
          expect(sb.bytes).toBe(model.length - acked);
        }
      }),
      params(300),
    );
  }, 120_000);
});
