/**
 * The stripe dialer with an injected clock and jitter: the opening dial (stripe 0, OPEN) and the JOINs
 * after it, generations, backoff, the "opening dial failed" and "opening dial lost" rules, one pending re-dial per index, and
 * stop. No sockets: the proxy tests (striped.test.ts, reliability.test.ts, secure-proxy.test.ts) exercise
 * it over real ones.
 */

import { describe, expect, test } from "bun:test";
import { BrokenError, ConnectError, type StriperError } from "../src/errors.ts";
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, OPEN_ATTEMPTS, StripeDialer, backoffMs, type DialAttempt, type DialTimers } from "../src/proxy/dialer.ts";
import { KIND_JOIN, KIND_OPEN } from "../src/secure/constants.ts";
import { until } from "./helpers/util.ts";

/** Timers that run only when the test says so. */
class ManualTimers implements DialTimers {
  private next = 1;
  readonly due = new Map<number, { fn: () => void; ms: number }>();
  cleared = 0;

  set(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.due.set(id, { fn, ms });
    return id;
  }

  clear(handle: unknown): void {
    if (this.due.delete(handle as number)) this.cleared++;
  }

  /** Delays of the pending timers, in the order they were set. */
  get delays(): number[] {
    return [...this.due.values()].map((t) => t.ms);
  }

  /** Runs every pending timer (those they set stay pending). */
  fireAll(): void {
    const now = [...this.due.entries()];
    for (const [id, t] of now) {
      this.due.delete(id);
      t.fn();
    }
  }
}

function setup(stripes: number, random = () => 0.5) {
  const timers = new ManualTimers();
  const dials: DialAttempt[] = [];
  const gaveUp: StriperError[] = [];
  const dialer = new StripeDialer({ stripes, dial: (a) => dials.push(a), unreachable: (e) => gaveUp.push(e), random, timers });
  return { timers, dials, gaveUp, dialer };
}

const refused = (i: number) => new ConnectError("E_REFUSED", `stripe ${i} refused`);

describe("backoffMs", () => {
  test("doubles from 50 ms up to 2000 ms, times a jitter factor in [0.5, 1.5)", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 50, 2000].map((k) => backoffMs(k, 0.5))).toEqual([50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
    expect(backoffMs(0, 0)).toBe(BACKOFF_BASE_MS * 0.5);
    expect(backoffMs(3, 0)).toBe(200);
    expect(backoffMs(20, 0.999)).toBeCloseTo(BACKOFF_MAX_MS * 1.499, 6);
    expect(backoffMs(20, 0.999)).toBeLessThan(BACKOFF_MAX_MS * 1.5);
  });
});

describe("StripeDialer", () => {
  test("start dials stripe 0 alone, generation 1, kind OPEN; its success dials the others as JOINs", () => {
    const { dialer, dials, timers } = setup(4);
    expect(dials).toEqual([]); // nothing before start()
    dialer.start();
    expect(dials).toEqual([{ index: 0, generation: 1, kind: KIND_OPEN }]);
    expect(dialer.everAccepted).toBe(false);
    dialer.succeeded(0);
    expect(dialer.everAccepted).toBe(true);
    expect(dials.slice(1)).toEqual([1, 2, 3].map((index) => ({ index, generation: 1, kind: KIND_JOIN })));
    expect(timers.due.size).toBe(0);
  });

  test("re-dials, stripe 0's included, are JOINs after their backoff", () => {
    const { dialer, dials, timers, gaveUp } = setup(3, () => 0);
    dialer.start();
    dialer.succeeded(0);
    dialer.failed(1, refused(1));
    dialer.redial(0); // the opening stripe died later
    expect(timers.delays).toEqual([25, 25]); // 50 ms × 0.5
    timers.fireAll();
    expect(dials.slice(3)).toEqual([
      { index: 1, generation: 2, kind: KIND_JOIN },
      { index: 0, generation: 2, kind: KIND_JOIN },
    ]);
    expect(gaveUp).toEqual([]);
  });

  test("when the opening dial fails, it gives up at once with that error and dials no more", () => {
    const { dialer, dials, timers, gaveUp } = setup(3);
    dialer.start();
    dialer.redial(0); // before acceptance a re-dial does nothing: the failure decides
    expect(timers.due.size).toBe(0);
    const err = new ConnectError("E_AUTH", "no authenticated reply within 5 s");
    dialer.failed(0, err);
    expect(gaveUp).toEqual([err]);
    dialer.failed(0, refused(0)); // reported once
    dialer.redial(0);
    expect(gaveUp).toEqual([err]);
    expect(timers.due.size).toBe(0);
    expect(dials.length).toBe(1);
  });

  test("an opening dial lost on the way is dialled again as an OPEN, after its backoff, up to OPEN_ATTEMPTS dials", () => {
    const { dialer, dials, timers, gaveUp } = setup(3, () => 0);
    dialer.start();
    const lost = new BrokenError("ECONNRESET", "connection lost");
    for (let attempt = 1; attempt < OPEN_ATTEMPTS; attempt++) {
      expect(dialer.openAttempts).toBe(attempt);
      expect(dialer.failed(0, lost, true)).toBe(true);
      expect(timers.delays).toEqual([25 * 2 ** (attempt - 1)]);
      timers.fireAll();
      expect(dials.at(-1)).toEqual({ index: 0, generation: attempt + 1, kind: KIND_OPEN });
    }
    // The last one lost too: the session cannot open, nothing more is dialled.
    expect(dialer.failed(0, lost, true)).toBe(false);
    expect(gaveUp).toEqual([lost]);
    expect(timers.due.size).toBe(0);
    expect(dials.length).toBe(OPEN_ATTEMPTS);
  });

  test("a second OPEN that is accepted opens the session: the others follow as JOINs", () => {
    const { dialer, dials, timers, gaveUp } = setup(3, () => 0);
    dialer.start();
    dialer.failed(0, new BrokenError("ECONNRESET", "connection lost"), true);
    timers.fireAll();
    dialer.succeeded(0);
    expect(dials).toEqual([
      { index: 0, generation: 1, kind: KIND_OPEN },
      { index: 0, generation: 2, kind: KIND_OPEN },
      { index: 1, generation: 1, kind: KIND_JOIN },
      { index: 2, generation: 1, kind: KIND_JOIN },
    ]);
    expect(gaveUp).toEqual([]);
  });

  test("repeated failures of one index back off exponentially up to the cap; a success resets it", () => {
    const { dialer, dials, timers } = setup(2);
    dialer.start();
    dialer.succeeded(0);
    dialer.succeeded(1);
    const seen: number[] = [];
    dialer.redial(1); // the stripe died
    for (let k = 0; k < 8; k++) {
      seen.push(...timers.delays);
      timers.fireAll();
      dialer.failed(1, refused(1));
    }
    expect(seen).toEqual([50, 100, 200, 400, 800, 1600, 2000, 2000]);
    expect(dials.filter((a) => a.index === 1).map((a) => a.generation)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    timers.fireAll();
    dialer.succeeded(1);
    dialer.redial(1);
    expect(timers.delays).toEqual([50]);
  });

  test("the jitter comes from the injected random source", () => {
    const values = [0, 0.25, 0.75];
    const { dialer, timers } = setup(3, () => values.shift()!);
    dialer.start();
    for (const i of [0, 1, 2]) dialer.succeeded(i);
    for (const i of [0, 1, 2]) dialer.redial(i);
    expect(timers.delays).toEqual([25, 37.5, 62.5]);
  });

  test("generations wrap from 65535 to 0", () => {
    const { dialer, dials, timers } = setup(1);
    dialer.start();
    dialer.succeeded(0);
    for (let g = 2; g <= 65537; g++) {
      dialer.redial(0);
      timers.fireAll();
      dialer.succeeded(0);
    }
    expect(dials.slice(-3).map((a) => a.generation)).toEqual([65535, 0, 1]);
    expect(dials.length).toBe(65537);
  });

  test("at most one re-dial is pending per index", () => {
    const { dialer, timers } = setup(2);
    dialer.start();
    dialer.succeeded(0);
    dialer.redial(1);
    dialer.redial(1);
    dialer.failed(1, refused(1));
    expect(timers.due.size).toBe(1);
  });

  test("stop cancels pending re-dials, and nothing dials afterwards", () => {
    const { dialer, dials, timers, gaveUp } = setup(3);
    dialer.start();
    dialer.succeeded(0);
    dialer.redial(1);
    dialer.redial(2);
    dialer.stop();
    expect(timers.cleared).toBe(2);
    expect(timers.due.size).toBe(0);
    dialer.redial(0);
    dialer.failed(1, refused(1));
    expect(timers.due.size).toBe(0);
    expect(dials.length).toBe(3); // stripe 0, then 1 and 2 as JOINs
    expect(gaveUp).toEqual([]);
  });

  test("with real timers, a re-dial happens after its backoff", async () => {
    const dials: DialAttempt[] = [];
    const dialer = new StripeDialer({ stripes: 1, dial: (a) => dials.push(a), unreachable: () => {}, random: () => 0 });
    dialer.start();
    dialer.succeeded(0);
    dialer.redial(0); // 25 ms
    // Watchdog only (60 s): the backoff is 25 ms; a loaded machine may take longer, never that long.
    await until(() => dials.length >= 2, "the re-dial happened", 60_000);
    expect(dials.map((a) => a.generation)).toEqual([1, 2]);
    dialer.stop();
  });
});
