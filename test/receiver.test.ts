/**
 * Receiver: DATA from any stripe back in order, the peer's FIN checked against what arrived (protocol
 * §4.2, §4.5), the end reported once, and the count of what makes an ACK due.
 */

import { describe, expect, test } from "bun:test";
import { RecvEnd, SessionEnd } from "../src/stripe/ending.ts";
import { Receiver } from "../src/stripe/receiver.ts";
import { expectProtocolError } from "./helpers/util.ts";

function range(from: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (from + i) & 0xff);
}

/** Everything deliverable now, joined. */
function take(r: Receiver): number[] {
  const out: number[] = [];
  for (let c = r.shift(); c !== undefined; c = r.shift()) out.push(...c);
  return out;
}

describe("data", () => {
  test("out-of-order pieces leave in order, duplicates once", () => {
    const r = new Receiver(1 << 16, new SessionEnd());
    r.data(10, range(10, 10));
    expect(take(r)).toEqual([]);
    r.data(0, range(0, 15)); // overlaps what is held
    r.data(5, range(5, 5)); // a duplicate
    expect(take(r)).toEqual([...range(0, 20)]);
    expect(r.delivered).toBe(20);
  });

  test("data beyond the window is E_WINDOW", () => {
    const r = new Receiver(100, new SessionEnd());
    r.data(0, range(0, 100));
    expectProtocolError(() => r.data(100, range(100, 1)), "E_WINDOW");
  });

  test("data beyond the peer's FIN is E_DATA_AFTER_FIN; up to it is fine", () => {
    const r = new Receiver(1 << 16, new SessionEnd());
    r.fin(50);
    r.data(40, range(40, 10));
    expectProtocolError(() => r.data(45, range(45, 6)), "E_DATA_AFTER_FIN");
  });

  test("DATA bytes and FINs count towards the next ACK; takeAckable() resets the count", () => {
    const r = new Receiver(1 << 16, new SessionEnd());
    r.data(0, range(0, 100));
    r.data(0, range(0, 100)); // duplicates count: they arrived
    expect(r.takeAckable()).toBe(200);
    expect(r.takeAckable()).toBe(0);
    r.fin(100);
    expect(r.takeAckable()).toBe(1);
  });
});

describe("FIN", () => {
  test("a FIN below data already received in order is E_FIN_MISMATCH", () => {
    const r = new Receiver(1 << 16, new SessionEnd());
    r.data(0, range(0, 30));
    expectProtocolError(() => r.fin(29), "E_FIN_MISMATCH");
  });

  test("a second FIN with another value is E_FIN_MISMATCH; the same FIN twice is fine", () => {
    const end = new SessionEnd();
    const r = new Receiver(1 << 16, end);
    r.fin(40);
    r.fin(40);
    expectProtocolError(() => r.fin(41), "E_FIN_MISMATCH");
    expect(end.peerFin).toBe(40);
  });

  test("the end is due once everything before the FIN has left, not before", () => {
    const end = new SessionEnd();
    const r = new Receiver(1 << 16, end);
    r.data(10, range(10, 10));
    r.fin(20);
    expect([end.recv, r.endDue]).toEqual([RecvEnd.FinReceived, false]);
    r.data(0, range(0, 10));
    expect(r.endDue).toBe(false); // arrived, not yet handed out
    take(r);
    expect(r.endDue).toBe(true);
    end.endDelivered();
    expect(r.endDue).toBe(false); // reported once
  });

  test("a FIN at 0 on an empty stream ends it at once", () => {
    const r = new Receiver(1 << 16, new SessionEnd());
    r.fin(0);
    expect(r.endDue).toBe(true);
  });
});
