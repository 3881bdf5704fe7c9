/**
 * SessionFactory (src/proxy/sessions.ts): a new session's receive window is granted against the proxy's
 * receive memory (ReceiveWindows), and given back when the session ends (release). Sessions are held open
 * and released explicitly, as a proxy does with its session table, so nothing here depends on timing
 * (issue 7). The rule's own figures are pinned in budget.test.ts (grantWindow); here an independent
 * ReceiveWindows fed the same opens and closes is the oracle, so a change of the rule changes one place.
 */

import { describe, expect, test } from "bun:test";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe } from "../src/pipe/striped.ts";
import { SessionFactory } from "../src/proxy/sessions.ts";
import { MIN_WINDOW, ReceiveWindows, windowCost } from "../src/stripe/budget.ts";
import { ConfigError } from "../src/errors.ts";
import { cleanups } from "./helpers/util.ts";

const MiB = 1024 * 1024;
const cleanup = cleanups();

/** A factory with its live sessions; everything is closed and the factory stopped after the test. */
function proxyWith(maxReceiveBuffer: number, maxSessions: number, window = DEFAULT_SESSION_OPTIONS.window) {
  const factory = new SessionFactory({ ...DEFAULT_SESSION_OPTIONS, window, role: "server" }, { maxBuffer: 2 * MiB, maxReceiveBuffer, maxSessions });
  const oracle = new ReceiveWindows(maxReceiveBuffer, { maxSessions });
  const live = new Set<StripedPipe>();
  cleanup.push(() => {
    for (const s of live) s.close();
    factory.stop();
  });
  return {
    factory,
    oracle,
    live,
    configured: window,
    /** Opens a session and holds it open; returns it, or undefined when refused. */
    open(): StripedPipe | undefined {
      const s = factory.open();
      if (s !== undefined) live.add(s);
      return s;
    },
    /** Closes a held session and releases its window, as a proxy does when a session ends. */
    close(s: StripedPipe): void {
      s.close();
      factory.release(s);
      live.delete(s);
    },
  };
}

describe("SessionFactory windows", () => {
  test("windows shrink as receive memory is reserved, never below the minimum, and memory stays within the limit", () => {
    const p = proxyWith(256 * MiB, 32);
    const windows: number[] = [];
    for (let k = 0; k < 32; k++) {
      const s = p.open()!;
      expect(s.opts.window).toBe(p.oracle.open(p.configured));
      windows.push(s.opts.window);
    }
    for (let k = 1; k < windows.length; k++) expect(windows[k]!).toBeLessThanOrEqual(windows[k - 1]!);
    expect(windows[0]!).toBe(p.configured);
    expect(windows.at(-1)!).toBeLessThan(windows[0]!);
    expect(windows.at(-1)!).toBeGreaterThanOrEqual(MIN_WINDOW);
    expect(p.factory.windows.used).toBe(windows.reduce((n, w) => n + windowCost(w), 0));
    expect(p.factory.windows.used).toBeLessThanOrEqual(256 * MiB);
  });

  test("beyond what the memory holds, a session is refused (undefined); a released window makes room again", () => {
    // 1 MiB holds the smallest window's cost (2 × 64 KiB + 128 KiB) 4 times.
    const p = proxyWith(1 * MiB, 1024);
    const held: StripedPipe[] = [];
    for (let s = p.open(); s !== undefined; s = p.open()) held.push(s);
    expect(held.length).toBe(Math.floor(MiB / windowCost(MIN_WINDOW)));
    expect(p.open()).toBeUndefined();
    p.close(held[0]!);
    p.factory.release(held[0]!); // a second release does nothing
    expect(p.open()?.opts.window).toBe(MIN_WINDOW);
    expect(p.open()).toBeUndefined();
  });

  test("every session held open takes a share of the send budget; closed ones give it back", () => {
    const p = proxyWith(512 * MiB, 1024);
    const a = p.open()!;
    const b = p.open()!;
    expect(p.factory.budget.sessions).toBe(2);
    expect(p.factory.budget.limit).toBe(2 * MiB);
    for (const s of [a, b]) expect(s.opts).toEqual({ ...DEFAULT_SESSION_OPTIONS, role: "server", window: s.opts.window });
    p.close(a);
    expect(p.factory.budget.sessions).toBe(1);
    expect(p.factory.windows.sessions).toBe(1);
  });

  test("an idle proxy gives the configured window, never more", () => {
    const small = proxyWith(512 * MiB, 1024, 256 * 1024);
    for (let k = 0; k < 4; k++) expect(small.open()!.opts.window).toBe(256 * 1024);
  });
});

test("a session that cannot be built (bad options) gives its window back at once", () => {
  const factory = new SessionFactory({ ...DEFAULT_SESSION_OPTIONS, frameSize: 0, role: "server" }, { maxReceiveBuffer: 64 * MiB });
  cleanup.push(() => factory.stop());
  expect(() => factory.open()).toThrow(ConfigError);
  expect([factory.windows.used, factory.windows.sessions]).toEqual([0, 0]);
});
