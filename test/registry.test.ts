/** The server's session registry: keys, the session limit, ended sessions, removal by owner, shutdown. Pure. */

import { describe, expect, test } from "bun:test";
import { StriperError, type ErrorCode } from "../src/errors.ts";
import { SessionRegistry, sessionKey } from "../src/proxy/registry.ts";

class FakeSession {
  constructor(public closed = false) {}
}

function expectCode(fn: () => unknown, code: ErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(StriperError);
  expect((caught as StriperError).code).toBe(code);
}

describe("SessionRegistry", () => {
  test("keys are the session id in hex", () => {
    expect(sessionKey(new Uint8Array([0, 1, 0xab, 0xff]))).toBe("0001abff");
    expect(sessionKey(new Uint8Array(16).fill(0x5a))).toHaveLength(32);
  });

  test("finds live sessions by key; an ended one counts as unknown but still holds its slot", () => {
    const reg = new SessionRegistry<FakeSession>(4);
    const a = new FakeSession();
    const b = new FakeSession();
    reg.add("a", a);
    reg.add("b", b);
    expect(reg.live("a")).toBe(a);
    expect(reg.live("nope")).toBeUndefined();
    b.closed = true;
    expect(reg.live("b")).toBeUndefined();
    expect(reg.size).toBe(2);
    expect([...reg.sessions.keys()]).toEqual(["a", "b"]);
  });

  test("the limit: a blocker at maxSessions, E_INTERNAL for an add past it, room again after a removal", () => {
    const reg = new SessionRegistry<FakeSession>(2);
    const a = new FakeSession();
    reg.add("a", a);
    expect(reg.openBlocker()).toBeUndefined();
    reg.add("b", new FakeSession());
    expect(reg.openBlocker()).toEqual({ code: "E_SESSION_LIMIT", reason: "session limit 2" });
    expectCode(() => reg.add("c", new FakeSession()), "E_INTERNAL");
    expect(reg.size).toBe(2);
    expect(reg.remove("a", a)).toBe(true);
    expect(reg.openBlocker()).toBeUndefined();
    reg.add("c", new FakeSession());
    expect(reg.size).toBe(2);
  });

  test("a key cannot be registered twice, not even over an ended session (its id stays ended)", () => {
    const reg = new SessionRegistry<FakeSession>(4);
    const old = new FakeSession();
    reg.add("k", old);
    expectCode(() => reg.add("k", new FakeSession()), "E_INTERNAL");
    old.closed = true;
    expect(reg.ended("k")).toBe(true);
    expectCode(() => reg.add("k", new FakeSession()), "E_INTERNAL");
    expect(reg.sessions.get("k")).toBe(old);
  });

  test("only the session that owns a key removes it", () => {
    const reg = new SessionRegistry<FakeSession>(4);
    const s = new FakeSession();
    reg.add("k", s);
    expect(reg.remove("k", new FakeSession())).toBe(false);
    expect(reg.live("k")).toBe(s);
    expect(reg.remove("k", s)).toBe(true);
    expect(reg.size).toBe(0);
    expect(reg.remove("k", s)).toBe(false);
  });

  test("ended ids are remembered for endedMs after removal, at most maxEnded of them, oldest forgotten first", () => {
    let now = 0;
    const reg = new SessionRegistry<FakeSession>(100, { endedMs: 1000, maxEnded: 3, now: () => now });
    for (const k of ["a", "b", "c", "d"]) {
      const s = new FakeSession(true);
      reg.add(k, s);
      reg.remove(k, s);
      now += 10;
    }
    expect(reg.endedCount).toBe(3);
    expect(["a", "b", "c", "d"].map((k) => reg.ended(k))).toEqual([false, true, true, true]);
    expect(reg.ended("never")).toBe(false);
    now = 1025; // b ended at 10, c at 20, d at 30
    expect(["b", "c", "d"].map((k) => reg.ended(k))).toEqual([false, false, true]);
    now = 2000;
    expect(reg.endedCount).toBe(0);
    const again = new FakeSession();
    reg.add("d", again); // forgotten: the id may be used again
    expect(reg.live("d")).toBe(again);
  });

  test("per source: a blocker at maxPerSource for that source only; a removal frees its count", () => {
    const reg = new SessionRegistry<FakeSession>(10, { maxPerSource: 2 });
    const a = new FakeSession();
    reg.add("a", a, "203.0.113.7");
    reg.add("b", new FakeSession(), "203.0.113.7");
    expect(reg.openBlocker("203.0.113.7")).toEqual({ code: "E_SOURCE_LIMIT", reason: "limit of 2 sessions per source address" });
    expect(reg.openBlocker("2001:db8::/64")).toBeUndefined();
    expectCode(() => reg.add("c", new FakeSession(), "203.0.113.7"), "E_INTERNAL");
    expect(reg.sourceCount("203.0.113.7")).toBe(2);
    reg.remove("a", a);
    expect(reg.sourceCount("203.0.113.7")).toBe(1);
    expect(reg.openBlocker("203.0.113.7")).toBeUndefined();
    // The per-source limit is never above the session limit, and must be a whole number ≥ 1.
    expect(new SessionRegistry<FakeSession>(4, { maxPerSource: 100 }).maxPerSource).toBe(4);
    expectCode(() => new SessionRegistry<FakeSession>(4, { maxPerSource: 0 }), "E_CONFIG");
  });

  test("after stopOpening no session is added; live ones stay findable", () => {
    const reg = new SessionRegistry<FakeSession>(4);
    const a = new FakeSession();
    reg.add("a", a);
    reg.stopOpening();
    expect(reg.openBlocker()).toEqual({ code: "E_SHUTDOWN", reason: "shutting down" });
    expectCode(() => reg.add("b", new FakeSession()), "E_INTERNAL");
    a.closed = true;
    expectCode(() => reg.add("a", new FakeSession()), "E_INTERNAL"); // not even over an ended one
    expect(reg.sessions.get("a")).toBe(a);
  });

  test("a limit that is not a whole number ≥ 1 is E_CONFIG", () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) expectCode(() => new SessionRegistry<FakeSession>(bad), "E_CONFIG");
  });
});
