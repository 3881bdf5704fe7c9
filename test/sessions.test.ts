/**
 * SessionFactory (src/proxy/sessions.ts): the receive window a new session gets depends only on how many
 * sessions are live when it opens. Sessions are held open and closed explicitly, as a proxy does with its
 * session table, so nothing here depends on timing (issue 7: the end-to-end version of this test relied on
 * sessions overlapping in wall-clock time and failed on busy machines).
 *
 * The figures of the rule itself (4 × budget shared, 1 MiB floor today) are pinned in budget.test.ts;
 * here `sessionWindow` is the oracle, so a change of the rule changes one place.
 */

import { describe, expect, test } from "bun:test";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe } from "../src/pipe/striped.ts";
import { SessionFactory } from "../src/proxy/sessions.ts";
import { MIN_SESSION_WINDOW, sessionWindow } from "../src/stripe/budget.ts";
import { cleanups } from "./helpers/util.ts";

const MiB = 1024 * 1024;
const cleanup = cleanups();

/**
 * A factory and its live sessions, counted as the proxies count them (client.ts and server.ts pass the
 * size of their session table to `open`). Everything is closed and the factory stopped after the test.
 */
function proxyWith(maxBuffer: number, window = DEFAULT_SESSION_OPTIONS.window) {
  const configured = window;
  const factory = new SessionFactory({ ...DEFAULT_SESSION_OPTIONS, window, role: "server" }, maxBuffer);
  const live = new Set<StripedPipe>();
  cleanup.push(() => {
    for (const s of live) s.close();
    factory.stop();
  });
  return {
    factory,
    live,
    configured,
    /** Opens a session and holds it open; returns it. */
    open(): StripedPipe {
      const s = factory.open(live.size);
      live.add(s);
      return s;
    },
    /** Closes a held session and takes it out of the table, as a proxy does when a session ends. */
    close(s: StripedPipe): void {
      s.close();
      live.delete(s);
    },
  };
}

describe("SessionFactory windows", () => {
  test("each session held open makes the next one's window no larger, down to the floor", () => {
    const p = proxyWith(1 * MiB);
    const windows: number[] = [];
    for (let k = 0; k < 8; k++) {
      const s = p.open();
      // The window for the k-th session is the budget rule's for k sessions already live.
      expect(s.opts.window).toBe(sessionWindow(p.configured, p.factory.budget, k));
      windows.push(s.opts.window);
    }
    expect(p.live.size).toBe(8);
    for (let k = 1; k < windows.length; k++) expect(windows[k]!).toBeLessThanOrEqual(windows[k - 1]!);
    // Under load the windows really shrink, and never below the floor or above what was configured.
    expect(windows.at(-1)!).toBeLessThan(windows[0]!);
    expect(windows.at(-1)!).toBe(MIN_SESSION_WINDOW);
    for (const w of windows) expect(w).toBeLessThanOrEqual(p.configured);
  });

  test("a session opened after others closed gets the window for the sessions still live", () => {
    const p = proxyWith(1 * MiB);
    const held = [p.open(), p.open(), p.open(), p.open()];
    const loaded = p.open().opts.window; // 5th, with 4 live
    for (const s of held.slice(1)) p.close(s);
    expect(p.live.size).toBe(2); // the first and the 5th
    const later = p.open().opts.window;
    expect(later).toBe(sessionWindow(p.configured, p.factory.budget, 2));
    expect(later).toBeGreaterThan(loaded);
    // Every held session counts against the budget's fair share; closed ones no longer do.
    expect(p.factory.budget.holders).toBe(p.live.size);
  });

  test("an idle proxy gives the configured window when the budget allows it, never more", () => {
    const big = proxyWith(32 * MiB, 16 * MiB);
    expect(big.open().opts.window).toBe(16 * MiB);
    const small = proxyWith(32 * MiB, 256 * 1024);
    for (let k = 0; k < 4; k++) expect(small.open().opts.window).toBe(256 * 1024);
  });

  test("sessions of one factory share one budget; the other options pass through unchanged", () => {
    const p = proxyWith(2 * MiB);
    const a = p.open();
    const b = p.open();
    expect(p.factory.budget.limit).toBe(2 * MiB);
    expect(p.factory.budget.holders).toBe(2);
    for (const s of [a, b]) expect(s.opts).toEqual({ ...DEFAULT_SESSION_OPTIONS, role: "server", window: s.opts.window });
  });
});
