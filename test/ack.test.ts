/**
 * AckPolicy: when an ACK is due (protocol §4.3, "When ACKs are sent") and what it carries: the delivered
 * offset, ACK_FLAG_FIN once the peer's stream is delivered, one entry per usable stripe in index order.
 */

import { describe, expect, test } from "bun:test";
import { ACK_DELAY_MS, ACK_EVERY_BYTES, AckPolicy, type AckedStripe } from "../src/stripe/ack.ts";
import { decodeAckEntries } from "../src/wire/codec.ts";
import { ACK_FLAG_FIN, FRAME_ACK, FRAME_HEADER_SIZE } from "../src/wire/constants.ts";

/** Records what write() appended. */
function sink(): { frames: { type: number; flags: number; value: number; payload: Uint8Array }[]; appendControl(type: number, flags: number, value: number, payload?: Uint8Array): void } {
  const frames: { type: number; flags: number; value: number; payload: Uint8Array }[] = [];
  return { frames, appendControl: (type, flags, value, payload) => frames.push({ type, flags, value, payload: payload ?? new Uint8Array(0) }) };
}

function stripe(index: number, generation: number, received: number, usable = true): AckedStripe {
  return { index, generation, received, usable };
}

describe("when", () => {
  test("constants: a 2 ms delay, at once after 1 MiB", () => {
    expect(ACK_DELAY_MS).toBe(2);
    expect(ACK_EVERY_BYTES).toBe(1024 * 1024);
  });

  test("received data is acknowledged later (the delay timer) until min(1 MiB, window/8) has arrived", () => {
    const a = new AckPolicy(16 * 1024 * 1024);
    expect(a.every).toBe(1024 * 1024);
    a.stripeAttached();
    const s = sink();
    a.write(s, 0, false, []);
    expect(a.received(600 * 1024, 0)).toBe(false);
    expect(a.due).toBe(false);
    expect(a.received(424 * 1024, 0)).toBe(true); // 1 MiB in all
    expect(a.due).toBe(true);
  });

  test("a small window acknowledges every window/8", () => {
    const a = new AckPolicy(256 * 1024);
    expect(a.every).toBe(32 * 1024);
    a.write(sink(), 0, false, []);
    expect(a.received(32 * 1024 - 1, 0)).toBe(false);
    expect(a.received(1, 0)).toBe(true);
  });

  test("delivered bytes far past the last ACK make one due at once (window space for the peer)", () => {
    const a = new AckPolicy(256 * 1024);
    a.write(sink(), 1000, false, []);
    expect(a.received(0, 1000 + 32 * 1024 - 1)).toBe(false);
    expect(a.received(0, 1000 + 32 * 1024)).toBe(true);
  });

  test("writing the ACK clears what was due and starts counting again", () => {
    const a = new AckPolicy(256 * 1024);
    a.received(32 * 1024, 0);
    a.write(sink(), 32 * 1024, false, []);
    expect([a.due, a.lastValue]).toEqual([false, 32 * 1024]);
    expect(a.received(100, 32 * 1024)).toBe(false);
  });

  test("a stripe attaching makes an ACK due and forgets the last value (the new stripe's peer needs it)", () => {
    const a = new AckPolicy(1 << 20);
    a.write(sink(), 500, false, []);
    a.stripeAttached();
    expect([a.due, a.lastValue]).toEqual([true, -1]);
  });

  test("the tick repeats an ACK only when delivered bytes have not been reported", () => {
    const a = new AckPolicy(1 << 20);
    a.write(sink(), 500, false, []);
    expect(a.tick(500)).toBe(false);
    expect(a.due).toBe(false);
    expect(a.tick(501)).toBe(true);
    expect(a.due).toBe(true);
  });

  test("settled: the last ACK reported the peer's FIN and nothing newer is owed", () => {
    const a = new AckPolicy(1 << 20);
    a.write(sink(), 700, true, []);
    expect(a.settled(700)).toBe(true);
    expect(a.settled(800)).toBe(false);
    a.markDue(); // a stripe died: the final ACK is repeated before the session may finish
    expect(a.settled(700)).toBe(false);
  });
});

describe("what", () => {
  test("value = delivered, one entry per usable stripe in index order, flag FIN once delivered up to it", () => {
    const a = new AckPolicy(1 << 20);
    const s = sink();
    const stripes = [stripe(0, 1, 100), undefined, stripe(2, 7, 2 ** 32 + 5), stripe(3, 1, 9, false)];
    const size = a.write(s, 12345, false, stripes);
    a.write(s, 12345, true, stripes);
    expect(s.frames.map((f) => [f.type, f.flags, f.value])).toEqual([
      [FRAME_ACK, 0, 12345],
      [FRAME_ACK, ACK_FLAG_FIN, 12345],
    ]);
    expect(decodeAckEntries(s.frames[0]!.payload)).toEqual([
      { index: 0, generation: 1, received: 100 },
      { index: 2, generation: 7, received: 5 }, // mod 2^32
    ]);
    expect(size).toBe(FRAME_HEADER_SIZE + 16);
  });
});
