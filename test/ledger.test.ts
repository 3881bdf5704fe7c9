/**
 * StripeLedger: frames recorded with their stripe end positions, confirmed by the peer's received
 * counts (mod 2^32), and what those confirmations teach: in-flight bytes, RTT, delivery-rate samples, and what
 * is still unconfirmed when the stripe dies or stalls. Pure; time is passed in.
 */

import { describe, expect, test } from "bun:test";
import { StripeLedger } from "../src/stripe/ledger.ts";
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

describe("RTT and delivery samples", () => {
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
    expect(l.sample.rtt).toBe(100);
  });

  test("a sample of 0 ms counts as 0.05 ms (a minimum of 0 would mean 'not measured')", () => {
    const l = new StripeLedger(0);
    l.record(0, 10, 26, 7);
    l.confirm(26, 7);
    expect(l.minRtt).toBe(0.05);
  });

  test("each confirmation that confirms a frame makes one sample; one that confirms nothing makes none", () => {
    const l = new StripeLedger(0);
    expect(l.samples).toBe(0);
    l.record(0, 100, 116, 0);
    l.record(100, 100, 232, 0);
    l.confirm(100, 10);
    expect(l.samples).toBe(0);
    l.confirm(116, 20);
    expect([l.samples, l.sample.delivered, l.sample.inflight, l.delivered]).toEqual([1, 100, 100, 100]);
    l.confirm(232, 30);
    expect([l.samples, l.sample.delivered, l.sample.inflight]).toEqual([2, 200, 0]);
  });

  test("the rate is what was delivered since the frame left, over the time since the delivery before it", () => {
    // An ACK-clocked stripe: 4 frames of 10 000 bytes sent at t = 0, then one more per confirmation.
    const l = new StripeLedger(0);
    for (let k = 0; k < 4; k++) l.record(k * 10_000, 10_000, (k + 1) * 10_016, 0);
    l.confirm(10_016, 20); // the first frame: 10 000 bytes since it left at 0, over 20 ms
    expect(l.sample.rate).toBe(500_000);
    l.record(40_000, 10_000, 50_080, 20); // sent when 10 000 had been delivered, at t = 20
    for (let k = 2; k <= 4; k++) l.confirm(k * 10_016, 20 + (k - 1) * 2.5);
    l.confirm(50_080, 40); // 40 000 delivered since (50 000 - 10 000) over 40 - 20 ms
    expect(l.sample.rate).toBe(2_000_000);
  });

  test("the rate interval is at least the send interval: ACKs read in a bunch do not inflate it", () => {
    const l = new StripeLedger(0);
    l.record(0, 10_000, 10_016, 0);
    l.record(10_000, 10_000, 20_032, 0);
    l.confirm(10_016, 10); // delivered 10 000 at t = 10; the newest frame delivered left at 0
    l.record(20_000, 10_000, 30_048, 40); // sent 40 ms after that frame left
    // One late ACK confirms both: the ACK interval (since t = 10) is 35 ms, the send interval 40 ms;
    // 20 000 bytes were delivered since the frame left: over 40 ms, not 35.
    l.confirm(30_048, 45);
    expect(l.sample.rate).toBe(500_000);
  });

  test("an idle stripe restarts its delivery clock: idle time is not slowness", () => {
    const l = new StripeLedger(0);
    l.record(0, 10_000, 10_016, 0);
    l.confirm(10_016, 10);
    l.record(10_000, 10_000, 20_032, 5000); // idle for 5 s, then a frame
    l.confirm(20_032, 5010);
    expect(l.sample.rate).toBe(1_000_000); // 10 000 bytes over 10 ms, not over 5 s
  });

  test("frames sent after markAppLimited are app-limited until everything in flight then has arrived", () => {
    const l = new StripeLedger(0);
    l.record(0, 1000, 1016, 0);
    l.markAppLimited(); // 1000 in flight, 0 delivered: app-limited until delivered passes 1000
    l.record(1000, 1000, 2032, 1);
    l.confirm(1016, 20);
    expect(l.sample.appLimited).toBe(false); // sent before the mark
    l.record(2000, 1000, 3048, 21); // delivered is 1000: not past the mark yet
    l.confirm(2032, 22);
    expect(l.sample.appLimited).toBe(true);
    l.record(3000, 1000, 4064, 23); // delivered 2000 passed the mark
    l.confirm(3048, 40);
    expect(l.sample.appLimited).toBe(true);
    l.confirm(4064, 45);
    expect(l.sample.appLimited).toBe(false);
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
