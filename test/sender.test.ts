/**
 * Sender: what goes out next. New data only within the peer's window (protocol §6), resends first and
 * trimmed below the ack (§7.1), one app chunk per piece, the FIN only after the last byte with nothing
 * left to resend and again if its stripe dies (§4.5), and E_BAD_ACK for an ack beyond what was sent.
 */

import { describe, expect, test } from "bun:test";
import { SendEnd, SessionEnd } from "../src/stripe/ending.ts";
import { StripeLedger } from "../src/stripe/ledger.ts";
import { Sender } from "../src/stripe/sender.ts";
import { FrameBatch } from "../src/wire/batch.ts";
import { FrameDecoder } from "../src/wire/codec.ts";
import { expectProtocolError } from "./helpers/util.ts";

function bytes(n: number, fill = 1): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

/** Frames everything next() offers, `max` bytes at a time; returns [offset, length] per piece. */
function drain(s: Sender, max: number): [number, number][] {
  const out: [number, number][] = [];
  for (let piece = s.next(max); piece !== undefined; piece = s.next(max)) {
    out.push([s.offset, piece.byteLength]);
    s.commit(piece.byteLength);
  }
  return out;
}

describe("new data", () => {
  test("pieces never span two app chunks and never exceed max", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(1000));
    s.append(bytes(300));
    expect(drain(s, 400)).toEqual([
      [0, 400],
      [400, 400],
      [800, 200],
      [1000, 300],
    ]);
    expect(s.nextOffset).toBe(1300);
    expect(s.hasWork()).toBe(false);
  });

  test("only below acked + peer window; an ack opens the window again", () => {
    const s = new Sender(1000, new SessionEnd());
    s.append(bytes(5000));
    expect(drain(s, 4096)).toEqual([[0, 1000]]);
    expect(s.hasWork()).toBe(false);
    expect(s.ack(600)).toBe(600);
    expect(drain(s, 4096)).toEqual([[1000, 600]]);
    s.peerWindow = 2000; // a WELCOME may change it
    expect(drain(s, 4096)).toEqual([[1600, 1000]]);
  });

  test("commit() of less than was offered: the rest comes next time", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(100));
    expect(s.next(100)?.byteLength).toBe(100);
    s.commit(30);
    expect(s.next(100)?.byteLength).toBe(70);
    expect(s.offset).toBe(30);
  });
});

describe("resends", () => {
  test("a dead stripe's unconfirmed frames go out first, trimmed below the ack, and count as resent", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(3000));
    const dead = new StripeLedger(0);
    for (const [off, len] of drain(s, 1000)) dead.record(off, len, off + len + 16, 0);
    s.append(bytes(500));
    s.ack(500); // the peer has [0, 500) already
    s.requeue(dead);
    // The three frames merge into one range [500, 3000), re-cut as it comes: offsets, not frames, are resent.
    expect(drain(s, 1000)).toEqual([
      [500, 1000],
      [1500, 1000],
      [2500, 500],
      [3000, 500], // then new data
    ]);
    expect(s.resentBytes).toBe(2500);
  });

  test("a resend wholly below the ack is dropped, never sent", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(2000));
    const dead = new StripeLedger(0);
    for (const [off, len] of drain(s, 1000)) dead.record(off, len, off + len + 16, 0);
    s.requeue(dead);
    s.ack(2000);
    expect(s.hasWork()).toBe(false);
    expect(s.next(1000)).toBeUndefined();
    expect(s.resentBytes).toBe(0);
  });

  test("the same frames requeued twice (rescued, then lost) go out once", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(1000));
    const stalling = new StripeLedger(0);
    for (const [off, len] of drain(s, 250)) stalling.record(off, len, off + len + 16, 0);
    s.requeue(stalling);
    s.requeue(stalling);
    expect(drain(s, 1000)).toEqual([[0, 1000]]);
  });
});

describe("FIN", () => {
  test("is due only after shutdown, once every byte is framed and nothing waits to be resent", () => {
    const end = new SessionEnd();
    const s = new Sender(1000, end);
    s.append(bytes(1500));
    expect(s.finDue()).toBe(false); // the app has not shut down
    end.shutdown();
    expect(s.finDue()).toBe(false); // bytes not framed yet (the window holds 500 back)
    drain(s, 4096);
    expect(s.finDue()).toBe(false);
    s.ack(1000);
    drain(s, 4096);
    expect([s.finDue(), s.hasWork(), s.finalOffset]).toEqual([true, true, 1500]);
    const dead = new StripeLedger(0);
    dead.record(1000, 500, 516, 0);
    s.requeue(dead);
    expect(s.finDue()).toBe(false); // the resend goes first
    drain(s, 4096);
    expect(s.finDue()).toBe(true);
  });

  test("goes out once; again only if its stripe dies before the ACK", () => {
    const end = new SessionEnd();
    const s = new Sender(1000, end);
    end.shutdown();
    expect(s.finDue()).toBe(true); // an empty stream ends at 0
    end.finPlaced(2);
    expect([s.finDue(), s.hasWork(), end.send]).toEqual([false, false, SendEnd.FinInFlight]);
    end.stripeLost(1); // another stripe: no effect
    expect(s.finDue()).toBe(false);
    end.stripeLost(2);
    expect([s.finDue(), end.send]).toEqual([true, SendEnd.FinLost]);
    end.finPlaced(0);
    end.finAcked();
    end.stripeLost(0);
    expect(s.finDue()).toBe(false);
  });
});

describe("acks", () => {
  test("release bytes once; an old ack releases nothing", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(1000));
    drain(s, 1000);
    expect(s.ack(400)).toBe(400);
    expect(s.ack(300)).toBe(0);
    expect(s.ack(400)).toBe(0);
    expect(s.buf.bytes).toBe(600);
  });

  test("an ack beyond what was framed is E_BAD_ACK, even if the bytes were appended", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(1000));
    drain(s, 100);
    expect(s.nextOffset).toBe(1000);
    expectProtocolError(() => s.ack(1001), "E_BAD_ACK");
    const fresh = new Sender(1 << 20, new SessionEnd());
    fresh.append(bytes(10));
    expectProtocolError(() => fresh.ack(1), "E_BAD_ACK");
  });
});

describe("fill: DATA frames into one batch", () => {
  /** A FrameBatch over a fresh buffer with `room` bytes, and what the decoder finds in it afterwards. */
  function batchOf(room: number): FrameBatch {
    const b = new FrameBatch(new Uint8Array(room));
    b.reset(b.buf);
    return b;
  }
  function framesIn(b: FrameBatch): [number, number][] {
    const out: [number, number][] = [];
    const dec = new FrameDecoder({ data: (o, bytes) => out.push([o, bytes.byteLength]), control() {} });
    dec.push(b.bytes());
    return out;
  }

  test("frames of at most frameSize up to the allowance, each recorded at its stripe end position", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(100_000));
    const b = batchOf(512 * 1024);
    const ledger = new StripeLedger(0);
    ledger.sent = 1000; // bytes already written to this stripe
    expect(s.fill(b, ledger, 50_000, 16 * 1024, 512 * 1024, 7)).toBe(4);
    expect(framesIn(b)).toEqual([
      [0, 16384],
      [16384, 16384],
      [32768, 16384],
      [49152, 848], // the allowance is in bytes
    ]);
    expect(ledger.inflight).toBe(50_000);
    expect(ledger.confirm((1000 + b.length) >>> 0, 8)).toBe(50_000); // the last frame ends where the batch ends
    expect(s.nextOffset).toBe(50_000);
  });

  test("stops at the batch size, but a chunk's short tail (< 16 KiB) rides along", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(70 * 1024));
    const b = batchOf(256 * 1024);
    s.fill(b, new StripeLedger(0), Infinity, 256 * 1024, 64 * 1024, 0);
    expect(framesIn(b)).toEqual([[0, 70 * 1024]]); // 6 KiB over the batch size: kept in this batch
    const s2 = new Sender(1 << 20, new SessionEnd());
    s2.append(bytes(100 * 1024));
    const b2 = batchOf(256 * 1024);
    s2.fill(b2, new StripeLedger(0), Infinity, 256 * 1024, 64 * 1024, 0);
    expect(framesIn(b2)).toEqual([[0, 64 * 1024]]); // 36 KiB left: cut at the batch size
  });

  test("an allowance of 0 frames nothing (a control-only batch)", () => {
    const s = new Sender(1 << 20, new SessionEnd());
    s.append(bytes(1000));
    const b = batchOf(64 * 1024);
    expect(s.fill(b, new StripeLedger(0), 0, 16 * 1024, 64 * 1024, 0)).toBe(0);
    expect(b.length).toBe(0);
  });
});
