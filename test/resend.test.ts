/**
 * ResendQueue: sorted, merged stream ranges, trimmed below the ack and consumed from the front. Unit
 * cases plus a seeded property test against a byte-set model.
 */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { ResendQueue } from "../src/stripe/resend.ts";

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) | 0 : 0x7e5e_0d;

/** The queue's ranges, in order: read by draining the queue, then put back. */
function contents(q: ResendQueue): [number, number][] {
  const out: [number, number][] = [];
  while (q.length > 0) {
    out.push([q.start, q.end]);
    q.consume(q.end);
  }
  for (const [s, e] of out) q.add(s, e);
  return out;
}

describe("add", () => {
  test("keeps ranges sorted whatever the order they come in", () => {
    const q = new ResendQueue();
    q.add(500, 600);
    q.add(100, 200);
    q.add(300, 400);
    expect(contents(q)).toEqual([[100, 200], [300, 400], [500, 600]]);
    expect(q.length).toBe(3);
    expect(q.bytes).toBe(300);
  });

  test("merges overlapping and touching ranges, so nothing is sent twice", () => {
    const q = new ResendQueue();
    q.add(100, 200);
    q.add(150, 250); // overlaps
    q.add(250, 300); // touches
    q.add(400, 500);
    expect(contents(q)).toEqual([[100, 300], [400, 500]]);
    q.add(50, 450); // swallows the first and reaches into the second
    expect(contents(q)).toEqual([[50, 500]]);
  });

  test("a range inside another changes nothing; an empty range is ignored", () => {
    const q = new ResendQueue();
    q.add(100, 300);
    q.add(150, 160);
    q.add(170, 170);
    q.add(400, 390);
    expect(contents(q)).toEqual([[100, 300]]);
  });

  test("bridges a gap between two ranges", () => {
    const q = new ResendQueue();
    q.add(0, 10);
    q.add(20, 30);
    q.add(40, 50);
    q.add(10, 20);
    expect(contents(q)).toEqual([[0, 30], [40, 50]]);
  });
});

describe("trim and consume", () => {
  test("trim drops what lies below the ack and cuts the range it falls in", () => {
    const q = new ResendQueue();
    q.add(0, 100);
    q.add(200, 300);
    q.add(400, 500);
    q.trim(250);
    expect(contents(q)).toEqual([[250, 300], [400, 500]]);
    q.trim(500);
    expect(q.length).toBe(0);
    q.trim(1000); // on an empty queue: nothing
    expect(q.length).toBe(0);
  });

  test("consume moves the first range's start, and removes it once reached", () => {
    const q = new ResendQueue();
    q.add(100, 200);
    q.add(300, 400);
    q.consume(150);
    expect([q.start, q.end]).toEqual([150, 200]);
    q.consume(200);
    expect([q.start, q.end]).toEqual([300, 400]);
    q.consume(400);
    expect(q.length).toBe(0);
  });

  test("thousands of ranges trimmed from the front keep the rest intact", () => {
    const q = new ResendQueue();
    for (let i = 0; i < 5000; i++) q.add(i * 10, i * 10 + 5);
    q.trim(30_000);
    expect(q.length).toBe(2000);
    expect([q.start, q.end]).toEqual([30_000, 30_005]);
    q.add(29_990, 30_002); // below the new front: merges with it
    expect([q.start, q.end]).toEqual([29_990, 30_005]);
  });

  test("clear empties it", () => {
    const q = new ResendQueue();
    q.add(1, 2);
    q.clear();
    expect([q.length, q.bytes]).toEqual([0, 0]);
  });
});

type Op = { t: "add"; start: number; len: number } | { t: "trim"; at: number } | { t: "consume"; by: number };

describe("property", () => {
  test("holds exactly the bytes a set model holds, as sorted disjoint non-touching ranges", () => {
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ t: fc.constant("add" as const), start: fc.nat(400), len: fc.nat(40) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("trim" as const), at: fc.nat(450) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("consume" as const), by: fc.integer({ min: 1, max: 30 }) }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const q = new ResendQueue();
        const model = new Set<number>();
        for (const o of ops) {
          if (o.t === "add") {
            q.add(o.start, o.start + o.len);
            for (let b = o.start; b < o.start + o.len; b++) model.add(b);
          } else if (o.t === "trim") {
            q.trim(o.at);
            for (const b of [...model]) if (b < o.at) model.delete(b);
          } else if (q.length > 0) {
            // The sender consumes from the front of the first range.
            const to = Math.min(q.start + o.by, q.end);
            for (let b = q.start; b < to; b++) model.delete(b);
            q.consume(to);
          }
          const got = contents(q);
          const bytes = new Set<number>();
          for (let i = 0; i < got.length; i++) {
            const [s, e] = got[i]!;
            expect(s).toBeLessThan(e);
            if (i > 0) expect(s).toBeGreaterThan(got[i - 1]![1]); // disjoint, not touching
            for (let b = s; b < e; b++) bytes.add(b);
          }
          expect([...bytes].sort((a, b) => a - b)).toEqual([...model].sort((a, b) => a - b));
          expect(q.bytes).toBe(model.size);
        }
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
});
