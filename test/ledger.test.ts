/**
 * StripeLedger: frames recorded with their stripe end positions, confirmed by the peer's received
 * counts (mod 2^32), and what those confirmations teach: in-flight bytes, RTT, delivery rate, and what
 * is still unconfirmed when the stripe dies or stalls. Pure; time is passed in.
 */

import { describe, expect, test } from "bun:test";
import { MIN_RATE_INTERVAL_MS, StripeLedger } from "../src/stripe/ledger.ts";
import { ResendQueue } from "../src/stripe/resend.ts";

/** The ranges a queue holds, by draining a copy of its contents through consume(). */
function ranges(q: ResendQueue): [number, number][] {
  const out: [number, number][] = [];
  while (q.length > 0) {
    out.push([q.start, q.end]);
    q.consume(q.end);
  }
  return out;
}

describe("confirmations", () => {
  test("a count confirms exactly the frames that end at or before it", () => {
    const l = new StripeLedger(0);
    l.record(0, 100, 116, 0); // a 16-byte header, then 100 bytes
    l.record(100, 50, 182, 0);
    l.record(150, 10, 208, 0);
    expect(l.inflight).toBe(160);
    expect(l.confirm(115, 5)).toBe(0); // one byte short of the first frame's end
    expect(l.confirm(116, 5)).toBe(100);
    expect(l.confirm(207, 6)).toBe(50);
    expect(l.inflight).toBe(10);
    expect(l.unconfirmedFrames).toBe(1);
    expect(l.confirm(208, 7)).toBe(10);
    expect(l.inflight).toBe(0);
  });

  test("an old or repeated count confirms nothing more", () => {
    const l = new StripeLedger(0);
    l.record(0, 100, 116, 0);
    l.record(100, 100, 232, 0);
    expect(l.confirm(116, 1)).toBe(100);
    expect(l.confirm(116, 2)).toBe(0);
    expect(l.confirm(50, 3)).toBe(0); // an ACK that overtook a newer one
    expect(l.inflight).toBe(100);
  });

  test("stripe positions wrap at 2^32: a count past the wrap confirms frames before and across it", () => {
    const l = new StripeLedger(0);
    const start = 2 ** 32 - 100;
    l.record(0, 60, start + 76, 0); // ends before the wrap
    l.record(60, 60, start + 152, 0); // ends 52 bytes past it
    expect(l.confirm((start + 76) >>> 0, 1)).toBe(60);
    expect(l.confirm(10, 1)).toBe(0); // 10 past the wrap: the second frame ends at 52
    expect(l.confirm(52, 2)).toBe(60);
    expect(l.inflight).toBe(0);
  });

  test("many confirmed frames are compacted away without losing the unconfirmed ones", () => {
    const l = new StripeLedger(0);
    for (let i = 0; i < 1000; i++) l.record(i * 10, 10, (i + 1) * 26, 0);
    expect(l.confirm(600 * 26, 1)).toBe(6000);
    expect(l.unconfirmedFrames).toBe(400);
    expect(l.holds(5999)).toBe(false);
    expect(l.holds(6000)).toBe(true);
    expect(l.confirm(1000 * 26, 2)).toBe(4000);
    expect(l.unconfirmedFrames).toBe(0);
  });
});

describe("RTT and rate", () => {
  test("RTT samples are time since the newest confirmed frame was sent; min and smoothed kept", () => {
    const l = new StripeLedger(0);
    l.record(0, 10, 26, 100);
    l.confirm(26, 140);
    expect([l.minRtt, l.srtt]).toEqual([40, 40]);
    l.record(10, 10, 52, 200);
    l.confirm(52, 220); // 20 ms
    expect(l.minRtt).toBe(20);
    expect(l.srtt).toBe(40 * 0.875 + 20 * 0.125);
    l.record(20, 10, 78, 300);
    l.confirm(78, 400); // 100 ms: the minimum stays
    expect(l.minRtt).toBe(20);
  });

  test("a sample of 0 ms counts as 0.05 ms (a minimum of 0 would mean 'not measured')", () => {
    const l = new StripeLedger(0);
    l.record(0, 10, 26, 7);
    l.confirm(26, 7);
    expect(l.minRtt).toBe(0.05);
  });

  test("the rate is bytes confirmed over intervals of at least MIN_RATE_INTERVAL_MS and 2 × min RTT", () => {
    expect(MIN_RATE_INTERVAL_MS).toBe(50);
    const l = new StripeLedger(0);
    l.record(0, 100_000, 100_016, 0);
    l.record(100_000, 100_000, 200_032, 0);
    l.confirm(100_016, 10); // 10 ms: too short for a sample
    expect(l.rate).toBe(0);
    l.confirm(200_032, 50); // 200 000 bytes over 50 ms
    expect(l.rate).toBe(4_000_000);
  });

  test("a lower sample lowers the rate only while the stripe had data in flight", () => {
    const l = new StripeLedger(0);
    l.record(0, 200_000, 200_016, 45);
    l.confirm(200_016, 50); // 200 000 bytes over the first 50 ms: 4 MB/s
    expect(l.rate).toBe(4_000_000);
    // Idle: a little data over a long time is not a slow stripe.
    l.record(200_000, 1000, 201_032, 140);
    l.confirm(201_032, 150);
    expect(l.rate).toBe(4_000_000);
    // Busy (more still in flight after this confirmation): the estimate falls, smoothed 0.6 / 0.4.
    l.record(201_000, 10_000, 211_048, 240);
    l.record(211_000, 10_000, 221_064, 240);
    l.confirm(211_048, 250); // 10 000 bytes in 100 ms = 100 kB/s
    expect(l.rate).toBe(4_000_000 * 0.6 + 100_000 * 0.4);
  });

  test("a higher sample is taken at once", () => {
    const l = new StripeLedger(0);
    l.record(0, 50_000, 50_016, 45);
    l.confirm(50_016, 50); // 1 MB/s
    expect(l.rate).toBe(1_000_000);
    l.record(50_000, 500_000, 550_032, 95);
    l.confirm(550_032, 100); // 500 000 bytes in 50 ms = 10 MB/s
    expect(l.rate).toBe(10_000_000);
  });

  test("the sampling interval grows with the RTT: at least 2 × min RTT", () => {
    const l = new StripeLedger(0);
    l.record(0, 1000, 1016, 0);
    l.confirm(1016, 60); // RTT 60 ms: the next sample needs 120 ms since the interval began
    expect(l.rate).toBe(0);
    l.record(1000, 1000, 2032, 60);
    l.confirm(2032, 120);
    expect(l.rate).toBe(2000 / 0.12);
  });
});

describe("what is unconfirmed", () => {
  test("holds() finds the frame that carries a byte, only while it is unconfirmed", () => {
    const l = new StripeLedger(0);
    l.record(1000, 500, 516, 0);
    l.record(3000, 500, 1032, 0);
    expect([l.holds(999), l.holds(1000), l.holds(1499), l.holds(1500), l.holds(3200)]).toEqual([false, true, true, false, true]);
    l.confirm(516, 1);
    expect(l.holds(1200)).toBe(false);
  });

  test("requeue() queues unconfirmed frames not wholly below the ack, and keeps them recorded", () => {
    const l = new StripeLedger(0);
    l.record(0, 100, 116, 0);
    l.record(200, 100, 232, 0);
    l.record(400, 100, 348, 0);
    l.record(100, 100, 464, 0); // a resend, out of offset order
    l.confirm(116, 1);
    const q = new ResendQueue();
    // [200, 300) is partly acknowledged: kept whole, trimmed when sent; counted from the ack (50 + 100).
    expect(l.requeue(250, q)).toBe(150);
    expect(ranges(q)).toEqual([[200, 300], [400, 500]]);
    expect(l.unconfirmedFrames).toBe(3);
    expect(l.inflight).toBe(300);
  });
});
