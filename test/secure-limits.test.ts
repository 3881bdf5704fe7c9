/**
 * The replay set and the handshake limits (per-source token buckets, the unauthenticated gate), driven by a
 * manual clock: every time below is a number passed in, never the wall clock.
 */

import { describe, expect, test } from "bun:test";
import { SourceLimiter, UnauthGate, sourceKey } from "../src/secure/ratelimit.ts";
import { DEFAULT_REPLAY_ENTRIES, ReplaySet } from "../src/secure/replay.ts";

const salt = (n: number) => {
  const s = new Uint8Array(32);
  new DataView(s.buffer).setUint32(28, n);
  return s;
};

describe("ReplaySet", () => {
  const T = 1_700_000_000_000;

  test("a salt is refused as a replay while its hello could still pass the time check", () => {
    const set = new ReplaySet({ windowMs: 30_000 });
    expect(set.admit(salt(1), T, T)).toBe("fresh");
    expect(set.admit(salt(1), T, T)).toBe("replay");
    expect(set.admit(salt(2), T, T)).toBe("fresh");
    // Last moment the time check would pass for timestamp T: T + 30 s. Still remembered then, and 1 s after.
    expect(set.admit(salt(1), T, T + 30_000)).toBe("replay");
    expect(set.admit(salt(1), T, T + 31_000)).toBe("replay");
    expect(set.size).toBe(2);
  });

  test("entries expire by timestamp + window + 1 s, not by arrival", () => {
    const set = new ReplaySet({ windowMs: 30_000 });
    // A client 20 s behind the server: its entry expires 20 s earlier than one on time.
    expect(set.admit(salt(1), T - 20_000, T)).toBe("fresh");
    expect(set.admit(salt(2), T, T)).toBe("fresh");
    expect(set.admit(salt(1), T - 20_000, T + 11_000 + 1)).toBe("fresh"); // expired (T − 20 s + 31 s), admitted anew
    expect(set.admit(salt(2), T, T + 11_001)).toBe("replay");
    expect(set.admit(salt(2), T, T + 31_001)).toBe("fresh");
  });

  test("expired entries are purged, so the set does not grow without bound", () => {
    const set = new ReplaySet({ windowMs: 1000, maxEntries: 1_000_000 });
    for (let t = 0; t < 100; t++) for (let i = 0; i < 100; i++) expect(set.admit(salt(t * 100 + i), T + t * 1000, T + t * 1000)).toBe("fresh");
    // Entries live about 2 s (window 1 s + 1 s slack) plus up to 1 s of bucket granularity.
    expect(set.size).toBeLessThanOrEqual(400);
    set.admit(salt(999_999), T + 1_000_000, T + 1_000_000);
    expect(set.size).toBe(1);
  });

  test("full: new salts are refused, live entries are never evicted, room comes back as entries expire", () => {
    const set = new ReplaySet({ windowMs: 30_000, maxEntries: 3 });
    expect(set.admit(salt(1), T, T)).toBe("fresh");
    expect(set.admit(salt(2), T + 5000, T + 5000)).toBe("fresh");
    expect(set.admit(salt(3), T + 5000, T + 5000)).toBe("fresh");
    expect(set.admit(salt(4), T + 5000, T + 5000)).toBe("full");
    // The live ones are all still refused as replays (nothing was evicted to make room).
    for (const n of [1, 2, 3]) expect(set.admit(salt(n), T, T + 6000)).toBe("replay");
    // Salt 1 expires at T + 31 s; then salt 4 fits, and 2, 3 are still remembered.
    expect(set.admit(salt(4), T + 32_000, T + 32_000)).toBe("fresh");
    expect(set.admit(salt(2), T + 5000, T + 32_000)).toBe("replay");
    expect(set.admit(salt(5), T + 32_000, T + 32_000)).toBe("full");
  });

  test("salts are compared exactly: one differing byte is a different salt", () => {
    const set = new ReplaySet();
    const a = new Uint8Array(32).fill(7);
    const b = new Uint8Array(a);
    b[0] = 8;
    expect(set.admit(a, T, T)).toBe("fresh");
    expect(set.admit(b, T, T)).toBe("fresh");
    // A view into a larger buffer is keyed by its own 32 bytes only.
    const big = new Uint8Array(100).fill(1);
    big.set(a, 40);
    expect(set.admit(big.subarray(40, 72), T, T)).toBe("replay");
  });

  test("defaults and bad options", () => {
    const set = new ReplaySet();
    expect(set.windowMs).toBe(30_000);
    expect(set.maxEntries).toBe(DEFAULT_REPLAY_ENTRIES);
    expect(() => new ReplaySet({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => new ReplaySet({ windowMs: -1 })).toThrow(RangeError);
  });
});

describe("sourceKey", () => {
  test("IPv4 as is; IPv4-mapped IPv6 as IPv4; IPv6 as its /64", () => {
    expect(sourceKey("192.0.2.7")).toBe("192.0.2.7");
    expect(sourceKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(sourceKey("::FFFF:c000:0207")).toBe("192.0.2.7");
    expect(sourceKey("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("2001:db8:1:2::9")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("2001:0DB8:0001:0002:ffff::")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("[2001:db8::1]")).toBe("2001:db8:0:0::/64");
    expect(sourceKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(sourceKey("::1")).toBe("0:0:0:0::/64");
    expect(sourceKey("::")).toBe("0:0:0:0::/64");
    expect(sourceKey("64:ff9b::192.0.2.1")).toBe("64:ff9b:0:0::/64");
  });

  test("two addresses in one /64 share a key; neighbouring /64s do not", () => {
    expect(sourceKey("2001:db8:a:b::1")).toBe(sourceKey("2001:db8:a:b:ffff:ffff:ffff:ffff"));
    expect(sourceKey("2001:db8:a:b::1")).not.toBe(sourceKey("2001:db8:a:c::1"));
  });

  test("unparsable input is its own key, never a throw", () => {
    for (const bad of ["1:2:3", "1::2::3", "g::1", "1:2:3:4:5:6:7:8:9", "::1.2.3.256", "12345::", ""]) {
      expect(sourceKey(bad)).toBe(bad);
    }
  });
});

describe("SourceLimiter", () => {
  test("a burst, then the rate; sources are independent", () => {
    const lim = new SourceLimiter({ ratePerSec: 20, burst: 5 });
    const t = 1000;
    for (let i = 0; i < 5; i++) expect(lim.take("198.51.100.1", t)).toBe(true);
    expect(lim.take("198.51.100.1", t)).toBe(false);
    expect(lim.take("198.51.100.2", t)).toBe(true);
    expect(lim.take("198.51.100.1", t + 49)).toBe(false); // 0.98 token
    expect(lim.take("198.51.100.1", t + 50)).toBe(true); // 20/s: one token per 50 ms
    expect(lim.take("198.51.100.1", t + 50)).toBe(false);
    // A long pause refills to the burst, no more.
    for (let i = 0; i < 5; i++) expect(lim.take("198.51.100.1", t + 60_000)).toBe(true);
    expect(lim.take("198.51.100.1", t + 60_000)).toBe(false);
  });

  test("one IPv6 /64 shares one bucket", () => {
    const lim = new SourceLimiter({ ratePerSec: 1, burst: 2 });
    expect(lim.take("2001:db8:1:1::a", 0)).toBe(true);
    expect(lim.take("2001:db8:1:1::b", 0)).toBe(true);
    expect(lim.take("2001:db8:1:1:1:2:3:4", 0)).toBe(false);
    expect(lim.take("2001:db8:1:2::a", 0)).toBe(true);
  });

  test("refund gives back a token (an authenticated hello costs nothing), never beyond the burst", () => {
    const lim = new SourceLimiter({ ratePerSec: 1, burst: 2 });
    expect(lim.take("a", 0)).toBe(true);
    expect(lim.take("a", 0)).toBe(true);
    expect(lim.take("a", 0)).toBe(false);
    lim.refund("a");
    expect(lim.take("a", 0)).toBe(true);
    lim.refund("a");
    lim.refund("a");
    lim.refund("a");
    expect(lim.take("a", 0)).toBe(true);
    expect(lim.take("a", 0)).toBe(true);
    expect(lim.take("a", 0)).toBe(false);
    lim.refund("unknown"); // harmless
    expect(lim.size).toBe(1);
  });

  test("a clock stepping back neither adds tokens nor throws", () => {
    const lim = new SourceLimiter({ ratePerSec: 10, burst: 1 });
    expect(lim.take("a", 10_000)).toBe(true);
    expect(lim.take("a", 0)).toBe(false);
    expect(lim.take("a", 10_050)).toBe(false);
    expect(lim.take("a", 10_100)).toBe(true);
  });

  test("the table is bounded: a full (idle) bucket is evicted before a busy one", () => {
    const lim = new SourceLimiter({ ratePerSec: 1, burst: 3, maxSources: 3 });
    expect(lim.take("busy", 0)).toBe(true);
    expect(lim.take("busy", 0)).toBe(true);
    expect(lim.take("busy", 0)).toBe(true);
    expect(lim.take("idle1", 0)).toBe(true);
    expect(lim.take("idle2", 0)).toBe(true);
    // At t = 2 s: idle1 and idle2 have refilled to 3 (full); busy has 2 of 3.
    expect(lim.take("new", 2000)).toBe(true);
    expect(lim.size).toBe(3);
    // busy kept its state (2 tokens at 2 s, none spent since): two takes then empty.
    expect(lim.take("busy", 2000)).toBe(true);
    expect(lim.take("busy", 2000)).toBe(true);
    expect(lim.take("busy", 2000)).toBe(false);
  });

  test("with no full bucket, the least recently used one goes", () => {
    const lim = new SourceLimiter({ ratePerSec: 0.001, burst: 2, maxSources: 2 });
    lim.take("a", 0);
    lim.take("b", 1);
    lim.take("a", 2); // a is now the most recent
    lim.take("c", 3); // evicts b
    expect(lim.size).toBe(2);
    expect(lim.take("a", 4)).toBe(false); // a's state survived: both tokens used
    expect(lim.take("b", 5)).toBe(true); // b starts again with a full bucket (evicting c)
  });

  test("many sources never grow the table past its bound", () => {
    const lim = new SourceLimiter({ maxSources: 100 });
    for (let i = 0; i < 10_000; i++) lim.take(`10.0.${i >> 8}.${i & 255}`, i);
    expect(lim.size).toBe(100);
  });

  test("defaults and bad options", () => {
    const lim = new SourceLimiter();
    expect([lim.ratePerSec, lim.burst, lim.maxSources]).toEqual([20, 80, 65_536]);
    expect(() => new SourceLimiter({ ratePerSec: 0 })).toThrow(RangeError);
    expect(() => new SourceLimiter({ burst: 0.5 })).toThrow(RangeError);
    expect(() => new SourceLimiter({ maxSources: 0 })).toThrow(RangeError);
  });
});

describe("UnauthGate", () => {
  test("admits up to the maximum; leave() makes room", () => {
    const gate = new UnauthGate<string>(2, 1000);
    expect(gate.enter("a", 0)).toEqual({ admitted: true });
    expect(gate.enter("b", 0)).toEqual({ admitted: true });
    expect(gate.enter("c", 500)).toEqual({ admitted: false }); // everyone waiting is younger than 1 s
    expect(gate.active).toBe(2);
    gate.leave("a");
    expect(gate.enter("c", 500)).toEqual({ admitted: true });
    gate.leave("zzz"); // never entered: harmless
    expect(gate.active).toBe(2);
  });

  test("when full, a newcomer evicts the oldest connection that has waited long enough", () => {
    const gate = new UnauthGate<string>(3, 1000);
    gate.enter("slow1", 0);
    gate.enter("slow2", 100);
    gate.enter("slow3", 900);
    expect(gate.enter("honest", 1050)).toEqual({ admitted: true, evicted: "slow1" });
    expect(gate.enter("honest2", 1099)).toEqual({ admitted: false }); // slow2 is only 999 ms old
    expect(gate.enter("honest2", 1100)).toEqual({ admitted: true, evicted: "slow2" });
    gate.leave("slow1"); // the evicted one's close arrives later: harmless
    expect(gate.active).toBe(3);
    // A slowloris holding every slot for the 10 s deadline cannot keep a newcomer out for more than 1 s.
    const g = new UnauthGate<number>(1024, 1000);
    for (let i = 0; i < 1024; i++) expect(g.enter(i, 0).admitted).toBe(true);
    expect(g.enter(-1, 999).admitted).toBe(false);
    expect(g.enter(-1, 1000)).toEqual({ admitted: true, evicted: 0 });
  });

  test("entering twice counts once; defaults and bad options", () => {
    const gate = new UnauthGate<string>(1);
    expect(gate.enter("a", 0).admitted).toBe(true);
    expect(gate.enter("a", 5).admitted).toBe(true);
    expect(gate.active).toBe(1);
    expect([new UnauthGate().max, new UnauthGate().minEvictAgeMs]).toEqual([1024, 1000]);
    expect(new UnauthGate(0).enter("x", 0).admitted).toBe(false);
    expect(() => new UnauthGate(-1)).toThrow(RangeError);
    expect(() => new UnauthGate(1, -5)).toThrow(RangeError);
  });
});
