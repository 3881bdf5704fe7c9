/**
 * The tick's decisions as pure functions of state and time: keepalive PINGs and dead stripes (protocol
 * §7.3), and the head-of-line rescue (§7.2).
 */

import { describe, expect, test } from "bun:test";
import { HOL_MIN_MS, HeadOfLineWatch, Health, Ping, stripeHealth, type HolView } from "../src/stripe/liveness.ts";

describe("stripeHealth", () => {
  test("silent for keepaliveMs with nothing outstanding: ping; for deadMs: dead", () => {
    expect(stripeHealth(999, Ping.Idle, 1000, 5000)).toBe(Health.Fine);
    expect(stripeHealth(1000, Ping.Idle, 1000, 5000)).toBe(Health.PingDue);
    expect(stripeHealth(4999, Ping.Idle, 1000, 5000)).toBe(Health.PingDue);
    expect(stripeHealth(5000, Ping.Idle, 1000, 5000)).toBe(Health.Dead);
  });

  test("a PING owed or outstanding is not owed again; dead is dead whatever the PING state", () => {
    expect(stripeHealth(2000, Ping.Owed, 1000, 5000)).toBe(Health.Fine);
    expect(stripeHealth(2000, Ping.Outstanding, 1000, 5000)).toBe(Health.Fine);
    expect(stripeHealth(6000, Ping.Outstanding, 1000, 5000)).toBe(Health.Dead);
  });
});

/** A stripe view holding the stream bytes in `holds` (as [start, end) ranges). */
function view(srtt: number, holds: [number, number][] = [], usable = true): HolView {
  return { usable, srtt, holds: (o) => holds.some(([s, e]) => s <= o && o < e) };
}

describe("HeadOfLineWatch", () => {
  test("waits max(400 ms, 4 × the smallest smoothed RTT) without ack progress, then names the stripe holding the first byte", () => {
    expect(HOL_MIN_MS).toBe(400);
    const w = new HeadOfLineWatch(0);
    const stripes = [view(10, [[2000, 3000]]), view(50, [[1000, 2000]])];
    expect(w.check(399, 1000, 3000, stripes)).toBe(-1);
    expect(w.check(400, 1000, 3000, stripes)).toBe(1);
    // A slow path: the smallest smoothed RTT is 200 ms, so the wait is 800 ms.
    const slow = new HeadOfLineWatch(0);
    const slowStripes = [view(200, [[0, 10]]), view(300)];
    expect(slow.check(799, 0, 10, slowStripes)).toBe(-1);
    expect(slow.check(800, 0, 10, slowStripes)).toBe(0);
  });

  test("a stalling stripe's own inflated RTT does not delay its rescue (the smallest RTT counts)", () => {
    const w = new HeadOfLineWatch(0);
    expect(w.check(400, 0, 10, [view(5000, [[0, 10]]), view(20)])).toBe(0);
  });

  test("ack progress, or nothing outstanding, starts the wait again", () => {
    const w = new HeadOfLineWatch(0);
    const stripes = [view(10, [[0, 10]]), view(10)];
    w.progressed(300);
    expect(w.check(600, 0, 10, stripes)).toBe(-1);
    expect(w.check(650, 10, 10, stripes)).toBe(-1); // everything acknowledged: progress
    expect(w.check(1000, 0, 10, stripes)).toBe(-1);
    expect(w.check(1050, 0, 10, stripes)).toBe(0);
  });

  test("needs two usable stripes: the frames must have somewhere else to go", () => {
    const w = new HeadOfLineWatch(0);
    expect(w.check(1000, 0, 10, [view(10, [[0, 10]])])).toBe(-1);
    expect(w.check(1000, 0, 10, [view(10, [[0, 10]]), view(10, [], false), undefined])).toBe(-1);
    expect(w.check(1000, 0, 10, [view(10, [[0, 10]]), undefined, view(10)])).toBe(0);
  });

  test("no stripe holds the first unacknowledged byte (it was confirmed, the ACK is late): nothing to rescue", () => {
    const w = new HeadOfLineWatch(0);
    expect(w.check(1000, 0, 10, [view(10, [[5, 10]]), view(10)])).toBe(-1);
  });

  test("unmeasured stripes wait the minimum", () => {
    const w = new HeadOfLineWatch(0);
    expect(w.check(400, 0, 10, [view(0), view(0, [[0, 10]])])).toBe(1);
  });
});
