/** Send budgets and receive windows: pure units, no sockets, the clock passed in. */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  MIN_WINDOW,
  ReceiveWindows,
  SendBudget,
  WINDOW_SPREAD,
  grantWindow,
  windowCost,
  windowFitting,
  type BudgetShare,
} from "../src/stripe/budget.ts";
import { reorderMemoryLimit } from "../src/stripe/reorder.ts";

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) | 0 : (Math.random() * 2 ** 31) | 0;
/** fast-check parameters: seeded, and the seed printed on failure. */
function params(numRuns: number): fc.Parameters<unknown> {
  return {
    seed: SEED,
    numRuns,
    reporter(details) {
      if (details.failed) {
        console.error(`property failed: rerun with TEST_SEED=${details.seed} (path ${details.counterexamplePath})`);
        throw new Error(fc.defaultReportMessage(details) ?? "property failed");
      }
    },
  };
}

const MiB = 1024 * 1024;

// --- SendBudget -------------------------------------------------------------------------------------

const KiB = 1024;

/** A budget on a hand-driven clock. */
function budget(limit: number, opts: { minShare?: number; chunk?: number; stallMs?: number } = {}) {
  const clock = { t: 0 };
  const b = new SendBudget(limit, { ...opts, now: () => clock.t });
  return { b, clock };
}

/** What a session does: read a chunk while admitted, up to `max` bytes held. */
function readWhileAdmitted(s: BudgetShare, chunk: number, max = Infinity): void {
  while (s.admits() && s.held < max) s.take(chunk);
}

describe("SendBudget", () => {
  test("every session may hold its minimum share, whatever the others hold", () => {
    const { b } = budget(4 * MiB, { minShare: 256 * KiB });
    const hog = b.join();
    hog.take(100 * MiB); // far beyond the pool (take never refuses: admits() is the gate)
    expect(hog.admits()).toBe(false);
    const s = b.join();
    expect(s.admits()).toBe(true);
    s.take(200 * KiB);
    expect(s.admits()).toBe(true);
    s.take(64 * KiB);
    expect(s.admits()).toBe(false);
    expect(b.used).toBe(100 * MiB + 264 * KiB);
  });

  test("past half the pool, only sessions under their fair share of it are admitted", () => {
    const { b } = budget(8 * MiB, { minShare: 0 });
    const shares = [b.join(), b.join(), b.join(), b.join()]; // fair share 2 MiB
    shares[0]!.take(3 * MiB);
    expect(shares[0]!.admits()).toBe(true); // under half: anyone
    shares[1]!.take(2 * MiB); // 5 of 8 MiB
    shares[2]!.take(1 * MiB);
    expect(shares[2]!.admits()).toBe(true);
    expect(shares[1]!.admits()).toBe(false);
    shares[3]!.take(2 * MiB); // full
    expect(shares[2]!.admits()).toBe(false);
  });

  test("a paused download is parked after stallMs; a delivering session then reads from the whole pool", () => {
    const limit = 32 * MiB;
    const { b, clock } = budget(limit, { minShare: 256 * KiB, stallMs: 1000 });
    // Four downloads read until the budget stops them, then their apps stop reading: no more acks.
    const paused = [b.join(), b.join(), b.join(), b.join()];
    for (const s of paused) readWhileAdmitted(s, 512 * KiB);
    expect(b.pooled).toBeGreaterThanOrEqual(limit / 2);
    const fresh = b.join();
    readWhileAdmitted(fresh, 512 * KiB);
    expect(fresh.held).toBeLessThanOrEqual(256 * KiB + 512 * KiB); // its minimum, one chunk over
    let woken = 0;
    fresh.wait(() => woken++);
    // The fresh session delivers (acks move) while the paused ones do not.
    for (clock.t = 0; clock.t < 1000; clock.t += 250) {
      fresh.give(fresh.held);
      readWhileAdmitted(fresh, 512 * KiB);
      b.sweep();
      expect(paused.some((s) => s.parked)).toBe(false);
    }
    fresh.wait(() => woken++);
    clock.t = 1000;
    b.sweep();
    // Parked as far as the parked account (at most the limit) takes them: all but the third (they
    // hold 16.5, 8.5, 8 and 0.5 MiB; the third would overfill it).
    expect(paused.map((s) => s.parked)).toEqual([true, true, false, true]);
    expect(b.parkedBytes).toBeLessThanOrEqual(limit);
    expect(b.pooled).toBe(fresh.excess + paused[2]!.excess);
    expect(b.pooled).toBeLessThan(limit / 2);
    expect(woken).toBe(1);
    // Now the fresh session draws on the pool again (768 KiB before); parked ones stay at their minimum.
    readWhileAdmitted(fresh, 512 * KiB, 64 * MiB);
    expect(fresh.held).toBeGreaterThanOrEqual(8 * MiB);
    for (const s of paused.slice(0, 2)) expect(s.admits()).toBe(false);
    // A paused download whose app reads again (an ack moves) is back in the pool.
    paused[0]!.give(512 * KiB);
    expect(paused[0]!.parked).toBe(false);
    expect(b.pooled + b.parkedBytes).toBe(paused.reduce((n, s) => n + s.excess, fresh.excess));
  });

  test("a session whose acks keep moving is never parked", () => {
    const { b, clock } = budget(8 * MiB, { minShare: 0, stallMs: 1000 });
    const s = b.join();
    s.take(4 * MiB);
    for (clock.t = 0; clock.t < 60_000; clock.t += 500) {
      s.give(1);
      b.sweep();
      expect(s.parked).toBe(false);
    }
  });

  test("the parked account holds at most the limit: beyond it, stalled sessions stay in the pool", () => {
    const { b, clock } = budget(10 * MiB, { minShare: 0, stallMs: 100 });
    const shares = [b.join(), b.join(), b.join()];
    for (const s of shares) s.take(6 * MiB);
    clock.t = 100;
    b.sweep();
    expect(shares.map((s) => s.parked)).toEqual([true, false, false]);
    expect(b.parkedBytes).toBe(6 * MiB);
    expect(b.pooled).toBe(12 * MiB);
  });

  test("wakes waiters first come first served, one read chunk of room each, below 75 % of the pool", () => {
    const { b } = budget(8 * MiB, { minShare: 0, chunk: MiB });
    const hog = b.join();
    hog.take(8 * MiB);
    const woken: number[] = [];
    const waiting = [1, 2, 3, 4, 5].map((k) => {
      const s = b.join();
      s.wait(() => woken.push(k));
      return s;
    });
    hog.give(1 * MiB); // 7 MiB pooled: above 75 %, nobody
    expect(woken).toEqual([]);
    hog.give(3 * MiB); // 4 MiB: 2 MiB of room under 6 MiB -> two waiters
    expect(woken).toEqual([1, 2]);
    waiting[3]!.cancel();
    hog.give(4 * MiB); // room for the rest but the cancelled one
    expect(woken).toEqual([1, 2, 3, 5]);
  });

  test("leave gives everything back, wakes others, and a share that left is inert", () => {
    const { b } = budget(4 * MiB, { minShare: 0, chunk: MiB });
    const a = b.join();
    a.take(4 * MiB);
    const w = b.join();
    let woke = false;
    w.wait(() => (woke = true));
    a.leave();
    expect([b.used, b.pooled, b.sessions, woke]).toEqual([0, 0, 1, true]);
    a.take(MiB);
    a.give(MiB);
    a.leave();
    expect([b.used, b.pooled, b.sessions]).toEqual([0, 0, 1]);
  });

  test("property: sessions reading whenever admitted, some delivering and some stalled, never hold more than the bound", () => {
    const scenario = fc.record({
      limit: fc.integer({ min: 1, max: 64 }).map((m) => m * MiB),
      minShare: fc.integer({ min: 0, max: 1024 }).map((k) => k * KiB),
      sessions: fc.integer({ min: 1, max: 40 }),
      steps: fc.array(
        fc.record({ who: fc.nat(), act: fc.constantFrom("read", "ack", "ack-all", "tick", "leave", "join"), n: fc.integer({ min: 1, max: 512 * KiB }) }),
        { maxLength: 400, size: "max" },
      ),
    });
    fc.assert(
      fc.property(scenario, ({ limit, minShare, sessions, steps }) => {
        const chunk = 512 * KiB;
        const { b, clock } = budget(limit, { minShare, chunk, stallMs: 1000 });
        let live = Array.from({ length: sessions }, () => b.join());
        let joined = sessions;
        const wakes = new Set<BudgetShare>();
        const check = () => {
          let held = 0;
          let excess = 0;
          for (const s of live) {
            held += s.held;
            excess += s.excess;
            expect(s.held).toBeGreaterThanOrEqual(0);
          }
          expect(b.used).toBe(held);
          expect(b.pooled + b.parkedBytes).toBe(excess);
          expect(b.parkedBytes).toBeLessThanOrEqual(limit + joined * chunk);
          expect(b.used).toBeLessThanOrEqual(2 * limit + joined * (minShare + chunk));
        };
        for (const st of steps) {
          const s = live[st.who % Math.max(1, live.length)];
          switch (st.act) {
            case "read": // one read chunk, only when admitted (as a session does)
              if (s?.admits()) s.take(Math.min(st.n, chunk));
              else if (s) s.wait(() => wakes.add(s));
              break;
            case "ack":
              if (s && s.held > 0) s.give(Math.min(s.held, st.n));
              break;
            case "ack-all":
              if (s && s.held > 0) s.give(s.held);
              break;
            case "tick":
              clock.t += 250;
              b.sweep();
              break;
            case "leave":
              if (s) {
                s.leave();
                live = live.filter((x) => x !== s);
              }
              break;
            case "join":
              live.push(b.join());
              joined++;
              break;
            default: {
              const never: never = st.act;
              throw new Error(`unknown step ${never}`);
            }
          }
          // A woken session reads one chunk at once (its socket resumes), as StripedPipe does.
          for (const w of wakes) if (live.includes(w)) w.take(chunk);
          wakes.clear();
          check();
        }
        for (const s of live) s.leave();
        expect([b.used, b.pooled, b.parkedBytes, b.sessions]).toEqual([0, 0, 0, 0]);
      }),
      params(200),
    );
  }, 120_000);
});

// --- receive windows --------------------------------------------------------------------------------

describe("grantWindow", () => {
  test("a window costs what its reorder buffer may use; windowFitting inverts it", () => {
    expect(windowCost(16 * MiB)).toBe(reorderMemoryLimit(16 * MiB));
    for (const w of [MIN_WINDOW, MiB, 16 * MiB]) expect(windowFitting(windowCost(w))).toBe(w);
    expect(windowFitting(0)).toBe(0);
  });

  test("the configured window while memory is plentiful, less when it is not, 0 below the minimum", () => {
    expect(grantWindow(16 * MiB, 1024 * MiB, 0)).toBe(16 * MiB);
    // Beyond its floor, a session takes half of what is spare (WINDOW_SPREAD): cost(2 MiB + 32 KiB) here.
    expect(WINDOW_SPREAD).toBe(2);
    expect(grantWindow(16 * MiB, windowCost(4 * MiB), 0)).toBe(windowFitting(windowCost(MIN_WINDOW) + (windowCost(4 * MiB) - windowCost(MIN_WINDOW)) / 2));
    expect(grantWindow(16 * MiB, windowCost(4 * MiB), 0, MIN_WINDOW, 1)).toBe(4 * MiB); // no spread: all of it
    expect(grantWindow(16 * MiB, windowCost(MIN_WINDOW), 0)).toBe(MIN_WINDOW);
    expect(grantWindow(16 * MiB, windowCost(MIN_WINDOW) - 1, 0)).toBe(0);
  });

  test("keeps the minimum window's cost for every other session that may still open", () => {
    const free = 100 * MiB;
    const keep = 200 * windowCost(MIN_WINDOW);
    // Of what is spare beyond the others' floors and its own, it takes half.
    const floorCost = windowCost(MIN_WINDOW);
    expect(grantWindow(64 * MiB, free, 200)).toBe(windowFitting(floorCost + (free - keep - floorCost) / 2));
    expect(grantWindow(64 * MiB, free, 200, MIN_WINDOW, 1)).toBe(windowFitting(free - keep));
    // With more slots than memory, a session still gets the minimum while it fits.
    expect(grantWindow(16 * MiB, windowCost(MIN_WINDOW), 10_000)).toBe(MIN_WINDOW);
  });

  test("a configured window below the minimum is given as it is", () => {
    expect(grantWindow(1000, windowCost(1000), 5)).toBe(1000);
    expect(grantWindow(1000, windowCost(1000) - 1, 5)).toBe(0);
  });
});

describe("ReceiveWindows", () => {
  test("every one of maxSessions sessions gets at least the minimum window, within the limit", () => {
    const maxSessions = 1024;
    const w = new ReceiveWindows(512 * MiB, { maxSessions });
    const got: number[] = [];
    for (let k = 0; k < maxSessions; k++) got.push(w.open(16 * MiB));
    expect(got.every((x) => x >= MIN_WINDOW)).toBe(true);
    expect(got[0]).toBe(16 * MiB);
    expect(got[maxSessions - 1]).toBe(MIN_WINDOW);
    expect(w.used).toBeLessThanOrEqual(w.limit);
    expect(w.used).toBe(got.reduce((n, x) => n + windowCost(x), 0));
  });

  test("refuses (0) when not even the minimum fits, and windows come back when sessions end", () => {
    // A configured window equal to the minimum: each session takes exactly its cost (no spread above it).
    const w = new ReceiveWindows(3 * windowCost(MiB), { minWindow: MiB });
    const a = w.open(MiB);
    const b = w.open(MiB);
    const c = w.open(MiB);
    expect([a, b, c]).toEqual([MiB, MiB, MiB]);
    expect(w.open(MiB)).toBe(0);
    expect(w.sessions).toBe(3);
    w.close(b);
    expect(w.open(16 * MiB)).toBe(MiB);
    expect(w.used).toBe(3 * windowCost(MiB));
  });

  test("property: any sequence of opens and closes keeps the reserved memory exact and within the limit", () => {
    const scenario = fc.record({
      limitMiB: fc.integer({ min: 1, max: 2048 }),
      maxSessions: fc.integer({ min: 0, max: 2000 }),
      ops: fc.array(fc.record({ open: fc.boolean(), configured: fc.integer({ min: 1, max: 64 * MiB }), pick: fc.nat() }), {
        maxLength: 300,
        size: "max",
      }),
    });
    fc.assert(
      fc.property(scenario, ({ limitMiB, maxSessions, ops }) => {
        const w = new ReceiveWindows(limitMiB * MiB, { maxSessions });
        const open: number[] = [];
        for (const op of ops) {
          if (op.open || open.length === 0) {
            const free = w.limit - w.used;
            const got = w.open(op.configured);
            const floor = Math.min(op.configured, MIN_WINDOW);
            if (free >= windowCost(floor)) {
              expect(got).toBeGreaterThanOrEqual(floor);
              expect(got).toBeLessThanOrEqual(op.configured);
              open.push(got);
            } else expect(got).toBe(0);
          } else {
            w.close(open.splice(op.pick % open.length, 1)[0]!);
          }
          expect(w.sessions).toBe(open.length);
          expect(w.used).toBe(open.reduce((n, x) => n + windowCost(x), 0));
          expect(w.used).toBeLessThanOrEqual(w.limit);
        }
      }),
      params(300),
    );
  });
});
