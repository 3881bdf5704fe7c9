/** StripeGuard and TokenBucket: control-frame flood limits, pure units with the clock passed in. */

import { describe, expect, test } from "bun:test";
import { BrokenError, ProtocolError, StriperError } from "../src/errors.ts";
import { ControlFloodError, DEFAULT_FLOOD_LIMITS, StripeGuard, TokenBucket, ackBytesPerToken } from "../src/stripe/guard.ts";
import { expectProtocolError } from "./helpers/util.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Runs `fn`; returns the error it throws, or undefined. */
function thrown(fn: () => void): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

/** Calls `fn` until it throws, at most `max` times; returns how many calls passed and the error. */
function countUntilThrow(max: number, fn: (k: number) => void): { passed: number; err: unknown } {
  for (let k = 0; k < max; k++) {
    const err = thrown(() => fn(k));
    if (err !== undefined) return { passed: k, err };
  }
  return { passed: max, err: undefined };
}

function expectFlood(err: unknown, what: string): void {
  expect(err).toBeInstanceOf(ControlFloodError);
  expect(err).toBeInstanceOf(BrokenError);
  expect(err).toBeInstanceOf(StriperError);
  expect((err as ControlFloodError).code).toBe("E_CONTROL_FLOOD");
  expect((err as Error).message).toContain(what);
}

describe("TokenBucket", () => {
  test("starts full, refills at its rate, never beyond its burst", () => {
    const b = new TokenBucket(10, 5, 1000);
    for (let k = 0; k < 5; k++) expect(b.take(1000)).toBe(true);
    expect(b.take(1000)).toBe(false);
    expect(b.take(1099)).toBe(false); // 0.99 tokens
    expect(b.take(1100)).toBe(true); // 1 token after 100 ms at 10/s
    expect(b.take(100_000)).toBe(true); // a long pause refills to the burst only
    for (let k = 0; k < 4; k++) expect(b.take(100_000)).toBe(true);
    expect(b.take(100_000)).toBe(false);
  });

  test("a refused take leaves the tokens; a clock going backwards adds none", () => {
    const b = new TokenBucket(1000, 10, 0);
    expect(b.take(0, 7)).toBe(true);
    expect(b.take(0, 4)).toBe(false);
    expect(b.take(0, 3)).toBe(true);
    expect(b.take(-50)).toBe(false);
    expect(b.take(1)).toBe(true);
  });

  test("credit is capped at twice the burst, and time passing does not cut it back", () => {
    const b = new TokenBucket(0, 3, 0);
    b.credit(1000);
    for (let k = 0; k < 6; k++) expect(b.take(0)).toBe(true);
    expect(b.take(0)).toBe(false);
    const c = new TokenBucket(1, 3, 0);
    c.credit(3);
    for (let k = 0; k < 6; k++) expect(c.take(1000)).toBe(true); // a second passed: still 6, not 3
    expect(c.take(1000)).toBe(false);
  });
});

describe("StripeGuard", () => {
  test("a PING flood is cut off after one burst with E_CONTROL_FLOOD", () => {
    const g = new StripeGuard(0);
    const r = countUntilThrow(10_000, () => g.ping(0));
    expect(r.passed).toBe(DEFAULT_FLOOD_LIMITS.pingBurst);
    expectFlood(r.err, "PINGs");
  });

  test("PINGs at the fastest legitimate keepalive (50 ms) for ten minutes never trip", () => {
    const g = new StripeGuard(0);
    for (let t = 0; t < 600_000; t += 50) g.ping(t);
  });

  test("PINGs just above the allowed rate trip within a few seconds; at the rate they do not", () => {
    const rate = DEFAULT_FLOOD_LIMITS.pingRate;
    const over = new StripeGuard(0);
    const r = countUntilThrow(100_000, (k) => over.ping((k * 1000) / (rate * 1.2)));
    expectFlood(r.err, "PINGs");
    expect(r.passed).toBeLessThan(rate * 10);
    const at = new StripeGuard(0);
    for (let k = 0; k < rate * 600; k++) at.ping((k * 1000) / rate);
  });

  test("an ACK with more entries than a session has stripes is E_BAD_ACK; a short tail is not an entry", () => {
    const g = new StripeGuard(0, { limits: { ...DEFAULT_FLOOD_LIMITS, maxAckEntries: 64 } });
    g.ack(0, 64 * 8 + 7, 0);
    expectProtocolError(() => g.ack(0, 65 * 8, 0), "E_BAD_ACK");
    expectProtocolError(() => g.ack(0, 8191 * 8, 0), "E_BAD_ACK");
    expect(thrown(() => g.ack(0, 65 * 8, 0))).toBeInstanceOf(ProtocolError);
  });

  test("an ACK flood with no data behind it is cut off after one burst", () => {
    const g = new StripeGuard(0);
    const r = countUntilThrow(100_000, () => g.ack(0, 4 * 8, 0));
    expect(r.passed).toBe(DEFAULT_FLOOD_LIMITS.ackBurst);
    expectFlood(r.err, "ACKs");
  });

  test("a peer acking a fast transfer the way v1 does never trips, with a small or a large window", () => {
    // Two ACKs per min(1 MiB, window / 8) bytes we send (one for bytes received, one for bytes
    // delivered) plus one every 2 ms from the ack timer, at 2 GB/s for 10 s, all on one stripe.
    for (const window of [64 * KiB, MiB, 16 * MiB]) {
      const g = new StripeGuard(0, { peerWindow: window });
      const every = Math.min(MiB, window / 8);
      let sent = 0;
      let owed = 0;
      for (let t = 0; t < 10_000; t++) {
        sent += 2e6;
        owed += (2 * 2e6) / every;
        for (; owed >= 1; owed--) g.ack(t, 8 * 8, sent);
        if (t % 2 === 0) g.ack(t, 8 * 8, sent);
      }
    }
  });

  test("ACK credit earned from data is bounded: a burst of sending buys a bounded flood", () => {
    const g = new StripeGuard(0, { peerWindow: 16 * MiB, sent: 0 });
    // 100 GB sent earns far more than 2 bursts of credit; at most 2 × burst tokens are kept.
    const r = countUntilThrow(1_000_000, () => g.ack(0, 8, 100e9));
    expect(r.passed).toBe(2 * DEFAULT_FLOOD_LIMITS.ackBurst);
    expectFlood(r.err, "ACKs");
  });

  test("a stripe attached late earns credit only for data sent after it attached", () => {
    const g = new StripeGuard(0, { peerWindow: 16 * MiB, sent: 100e9 });
    const r = countUntilThrow(1_000_000, () => g.ack(0, 8, 100e9));
    expect(r.passed).toBe(DEFAULT_FLOOD_LIMITS.ackBurst);
  });

  test("other control frames (PONG, FIN) are limited too", () => {
    const g = new StripeGuard(0);
    const r = countUntilThrow(10_000, () => g.other(5));
    expect(r.passed).toBe(DEFAULT_FLOOD_LIMITS.otherBurst);
    expectFlood(r.err, "control frames");
    // One PONG a second (answers to our keepalive) for an hour is fine.
    const h = new StripeGuard(0);
    for (let t = 0; t < 3_600_000; t += 1000) h.other(t);
  });

  test("each kind has its own bucket: a PING burst does not use up ACK credit", () => {
    const g = new StripeGuard(0);
    for (let k = 0; k < DEFAULT_FLOOD_LIMITS.pingBurst; k++) g.ping(0);
    for (let k = 0; k < DEFAULT_FLOOD_LIMITS.ackBurst; k++) g.ack(0, 8, 0);
    for (let k = 0; k < DEFAULT_FLOOD_LIMITS.otherBurst; k++) g.other(0);
  });
});

describe("ackBytesPerToken", () => {
  test("eight tokens per min(1 MiB, window / 8) bytes, at least one byte per token", () => {
    expect(ackBytesPerToken(16 * MiB)).toBe(MiB / 8);
    expect(ackBytesPerToken(64 * KiB)).toBe(1024);
    expect(ackBytesPerToken(1)).toBe(1);
  });
});
