/**
 * SessionEnd: each direction's way to its FIN (protocol §9), and the rules that combine them: when a
 * stripe's TCP FIN is expected, when the peer can be taken to have finished, and when the session is done.
 */

import { describe, expect, test } from "bun:test";
import { RecvEnd, SendEnd, SessionEnd } from "../src/stripe/ending.ts";
import { expectProtocolError } from "./helpers/util.ts";

describe("our FIN", () => {
  test("Open → FinQueued → FinInFlight → FinAcked, owed only while queued", () => {
    const e = new SessionEnd();
    expect([e.send, e.finOwed, e.finSent]).toEqual([SendEnd.Open, false, false]);
    e.shutdown();
    expect([e.send, e.finOwed, e.finSent]).toEqual([SendEnd.FinQueued, true, false]);
    e.shutdown(); // twice changes nothing
    expect(e.send).toBe(SendEnd.FinQueued);
    e.finPlaced(3);
    expect([e.send, e.finStripe, e.finOwed, e.finSent]).toEqual([SendEnd.FinInFlight, 3, false, true]);
    e.finAcked();
    expect([e.send, e.finStripe, e.finOwed, e.finSent]).toEqual([SendEnd.FinAcked, -1, false, true]);
  });

  test("lost with its stripe: owed again, and still counted as sent", () => {
    const e = new SessionEnd();
    e.shutdown();
    e.finPlaced(1);
    e.stripeLost(0);
    expect(e.send).toBe(SendEnd.FinInFlight);
    e.stripeLost(1);
    expect([e.send, e.finStripe, e.finOwed, e.finSent]).toEqual([SendEnd.FinLost, -1, true, true]);
    e.finAcked(); // the ACK can still arrive on another stripe
    expect(e.send).toBe(SendEnd.FinAcked);
  });

  test("an ACK of our FIN before we sent one is E_BAD_ACK", () => {
    const e = new SessionEnd();
    expectProtocolError(() => e.finAcked(), "E_BAD_ACK");
    e.shutdown();
    expectProtocolError(() => e.finAcked(), "E_BAD_ACK");
  });
});

describe("combined", () => {
  test("the FINs have crossed once the peer's arrived and ours was sent", () => {
    const e = new SessionEnd();
    e.finReceived(10);
    expect([e.recv, e.peerFin, e.finsCrossed]).toEqual([RecvEnd.FinReceived, 10, false]);
    e.shutdown();
    expect(e.finsCrossed).toBe(false);
    e.finPlaced(0);
    expect(e.finsCrossed).toBe(true);
    e.stripeLost(0);
    expect(e.finsCrossed).toBe(true); // sent once is enough
  });

  test("the peer ending every stripe settles our FIN only after its stream is delivered", () => {
    const e = new SessionEnd();
    e.shutdown();
    e.finPlaced(0);
    e.finReceived(0);
    expect(e.peerFinished()).toBe(false); // its stream is not delivered yet
    e.endDelivered();
    expect(e.peerFinished()).toBe(true);
    expect(e.send).toBe(SendEnd.FinAcked);
    expect(e.peerFinished()).toBe(false); // already settled
  });

  test("the peer ending stripes before our FIN went out settles nothing", () => {
    const e = new SessionEnd();
    e.finReceived(0);
    e.endDelivered();
    expect(e.peerFinished()).toBe(false);
    e.shutdown();
    expect(e.peerFinished()).toBe(false);
    expect(e.send).toBe(SendEnd.FinQueued);
  });

  test("done: our FIN acknowledged, the peer's stream delivered, and the final ACK written", () => {
    const e = new SessionEnd();
    expect(e.done(true)).toBe(false);
    e.shutdown();
    e.finPlaced(0);
    e.finAcked();
    expect(e.done(true)).toBe(false);
    e.finReceived(5);
    expect(e.done(true)).toBe(false);
    e.endDelivered();
    expect(e.done(false)).toBe(false);
    expect(e.done(true)).toBe(true);
  });
});
