/** BufferBudget and per-session windows: pure units, no sockets. */

import { describe, expect, test } from "bun:test";
import { BufferBudget, MIN_SESSION_WINDOW, sessionWindow } from "../src/stripe/budget.ts";

const MiB = 1024 * 1024;

describe("BufferBudget", () => {
  test("open until the limit; peak tracks the highest use", () => {
    const b = new BufferBudget(10 * MiB);
    b.take(6 * MiB);
    expect(b.open).toBe(true);
    b.take(4 * MiB);
    expect(b.open).toBe(false);
    b.give(3 * MiB);
    expect(b.open).toBe(true);
    expect(b.used).toBe(7 * MiB);
    expect(b.peak).toBe(10 * MiB);
  });

  test("past half the limit only sessions under their fair share are admitted", () => {
    const b = new BufferBudget(8 * MiB);
    b.holders = 4; // fair share 2 MiB
    b.take(3 * MiB);
    expect(b.admits(5 * MiB)).toBe(true); // under half: anyone
    b.take(2 * MiB); // 5 of 8 MiB
    expect(b.admits(1 * MiB)).toBe(true);
    expect(b.admits(2 * MiB)).toBe(false);
    b.take(3 * MiB); // full
    expect(b.admits(0)).toBe(false);
  });

  test("wakes waiters first come first served, one read chunk of room each, below 75%", () => {
    const b = new BufferBudget(8 * MiB, MiB);
    const woken: number[] = [];
    b.take(8 * MiB);
    for (const k of [1, 2, 3, 4, 5]) b.wait(() => woken.push(k));
    b.give(1 * MiB); // 7 MiB used: above 75%, nobody
    expect(woken).toEqual([]);
    b.give(3 * MiB); // 4 MiB used: 2 MiB of room under 6 MiB -> two waiters
    expect(woken).toEqual([1, 2]);
    b.give(4 * MiB); // 0 used: room for the rest
    expect(woken).toEqual([1, 2, 3, 4, 5]);
  });

  test("a cancelled waiter is not woken", () => {
    const b = new BufferBudget(MiB);
    b.take(MiB);
    let woke = false;
    const w = () => (woke = true);
    b.wait(w);
    b.cancel(w);
    b.give(MiB);
    expect(woke).toBe(false);
  });
});

describe("sessionWindow", () => {
  test("full window while few sessions share the budget, shrinking to the floor under load", () => {
    const b = new BufferBudget(32 * MiB);
    expect(sessionWindow(16 * MiB, b, 0)).toBe(16 * MiB);
    expect(sessionWindow(16 * MiB, b, 7)).toBe(16 * MiB);
    expect(sessionWindow(16 * MiB, b, 15)).toBe(8 * MiB);
    expect(sessionWindow(16 * MiB, b, 1000)).toBe(MIN_SESSION_WINDOW);
  });

  test("never above what was configured", () => {
    expect(sessionWindow(256 * 1024, new BufferBudget(32 * MiB), 0)).toBe(256 * 1024);
  });
});
