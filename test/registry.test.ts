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

  test("a live key cannot be registered twice; an ended session's key is taken over, even at the limit", () => {
    const reg = new SessionRegistry<FakeSession>(1);
    const old = new FakeSession();
    reg.add("k", old);
    expectCode(() => reg.add("k", new FakeSession()), "E_INTERNAL");
    old.closed = true;
    const next = new FakeSession();
    reg.add("k", next);
    expect(reg.live("k")).toBe(next);
    expect(reg.size).toBe(1);
  });

  test("only the session that owns a key removes it: an ended session's late removal keeps its successor", () => {
    const reg = new SessionRegistry<FakeSession>(4);
    const old = new FakeSession(true);
    reg.add("k", old);
    const next = new FakeSession();
    reg.add("k", next);
    expect(reg.remove("k", old)).toBe(false);
    expect(reg.live("k")).toBe(next);
    expect(reg.remove("k", next)).toBe(true);
    expect(reg.size).toBe(0);
    expect(reg.remove("k", next)).toBe(false);
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
