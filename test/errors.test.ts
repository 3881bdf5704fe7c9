/**
 * Error types: stable codes, the RESET code each error makes a session send, the peer's RESET kept as
 * a field, and wrapping of foreign errors.
 */

import { describe, expect, test } from "bun:test";
import {
  BrokenError,
  ConnectError,
  ERROR_CODES,
  PeerResetError,
  ProtocolError,
  StriperError,
  asStriperError,
  defaultResetCode,
} from "../src/errors.ts";
import { ResetCode } from "../src/wire/constants.ts";

describe("codes", () => {
  test("are unique and all start with E", () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const c of ERROR_CODES) expect(c).toMatch(/^E[A-Z0-9_]+$/);
  });
});

describe("the RESET code a session sends", () => {
  test("a ProtocolError sends RESET_PROTOCOL", () => {
    expect(new ProtocolError("E_WINDOW", "x").resetCode).toBe(ResetCode.Protocol);
  });

  test("a ConnectError sends RESET_TARGET_UNREACHABLE unless told otherwise", () => {
    expect(new ConnectError("ECONNREFUSED", "x").resetCode).toBe(ResetCode.TargetUnreachable);
    expect(new ConnectError("E_REFUSED", "x", { resetCode: ResetCode.PeerFailed }).resetCode).toBe(ResetCode.PeerFailed);
  });

  test("by code otherwise: E_SHUTDOWN, E_GRACE_EXPIRED and E_PROTOCOL have their own; the rest RESET_PEER_FAILED", () => {
    expect(new BrokenError("E_SHUTDOWN", "x").resetCode).toBe(ResetCode.Shutdown);
    expect(new BrokenError("E_GRACE_EXPIRED", "x").resetCode).toBe(ResetCode.GraceExpired);
    expect(defaultResetCode("E_PROTOCOL")).toBe(ResetCode.Protocol);
    expect(new BrokenError("E_ABORTED", "x").resetCode).toBe(ResetCode.PeerFailed);
    expect(new StriperError("ECONNRESET", "x").resetCode).toBe(ResetCode.PeerFailed);
  });

  test("a given resetCode wins", () => {
    expect(new BrokenError("E_SHUTDOWN", "x", { resetCode: ResetCode.PeerFailed }).resetCode).toBe(ResetCode.PeerFailed);
  });
});

describe("PeerResetError", () => {
  test("keeps the received code and reason as fields, and both in the message", () => {
    const e = new PeerResetError(5, "target refused");
    expect(e).toBeInstanceOf(BrokenError);
    expect([e.code, e.peerCode, e.reason]).toEqual(["E_PEER_RESET", 5, "target refused"]);
    expect(e.message).toBe("peer reset the session (code 5): target refused");
  });

  test("an unknown code is kept as it came", () => {
    expect(new PeerResetError(2 ** 40, "?").peerCode).toBe(2 ** 40);
  });
});

describe("asStriperError", () => {
  test("passes StriperErrors through unchanged", () => {
    const e = new ProtocolError("E_BAD_PAD", "x");
    expect(asStriperError(e)).toBe(e);
  });

  test("keeps a system error's code and the original as cause", () => {
    const sys = Object.assign(new Error("connection reset"), { code: "ECONNRESET" });
    const e = asStriperError(sys, "E_SOCKET");
    expect([e.code, e.message, e.cause]).toEqual(["ECONNRESET", "connection reset", sys]);
  });

  test("falls back to the given code for errors without one and for non-errors", () => {
    expect(asStriperError(new TypeError("boom"), "E_PROTOCOL").code).toBe("E_PROTOCOL");
    expect(asStriperError(new TypeError("boom"), "E_PROTOCOL").resetCode).toBe(ResetCode.Protocol);
    expect(asStriperError("just a string").code).toBe("E_INTERNAL");
  });
});
