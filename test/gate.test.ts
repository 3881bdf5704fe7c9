/**
 * SendGate: send()'s backpressure. The app may send until the store holds a window's worth or the
 * proxy's shared SendBudget refuses; acknowledgements and the budget's wake-ups reopen it, with one
 * drain(); a parked (stalled) session only by its own acknowledgement.
 */

import { describe, expect, test } from "bun:test";
import { SendBudget } from "../src/stripe/budget.ts";
import { SendGate } from "../src/stripe/gate.ts";

/** A gate over a store whose size the test sets; counts drains. */
function gate(window: number, budget?: SendBudget) {
  const state = { held: 0, drains: 0 };
  const g = new SendGate(window, budget, () => state.held, () => state.drains++);
  return { g, state };
}

describe("window", () => {
  test("open below the window; at it, closed until an ack brings the store below", () => {
    const { g, state } = gate(1000);
    state.held = 999;
    expect(g.admit()).toBe(true);
    state.held = 1000;
    expect(g.admit()).toBe(false);
    expect(g.blocked).toBe(true);
    g.reopen(true);
    expect(state.drains).toBe(0); // still a window's worth held
    state.held = 400;
    g.reopen(true);
    expect([state.drains, g.blocked]).toEqual([1, false]);
    g.reopen(true);
    expect(state.drains).toBe(1); // one drain per block
  });
});

describe("budget", () => {
  // No per-session minimum here, so the pool alone decides; budget.test.ts covers the minimum.
  const budgetOf = (limit: number) => new SendBudget(limit, { minShare: 0, chunk: 1000, now: () => 0 });

  test("holds a share until closed; what it took is given back on close", () => {
    const budget = budgetOf(10_000);
    const { g, state } = gate(1 << 20, budget);
    expect(budget.sessions).toBe(1);
    g.took(3000);
    state.held = 3000;
    g.released(1000);
    state.held = 2000;
    expect(budget.used).toBe(2000);
    g.close();
    expect([budget.used, budget.sessions]).toEqual([0, 0]);
    g.close();
    expect(budget.sessions).toBe(0);
  });

  test("refused by a full budget: closed, and reopened by the budget's wake-up once it has room", () => {
    const budget = budgetOf(10_000);
    const other = gate(1 << 20, budget); // another session holding most of the budget
    other.g.took(9000);
    const { g, state } = gate(1 << 20, budget);
    g.took(2000);
    state.held = 2000;
    expect(g.admit()).toBe(false); // 11 000 > 10 000
    other.g.released(9000); // the pool falls under its low-water mark: waiters wake
    expect([state.drains, g.blocked]).toEqual([1, false]);
  });

  test("a parked session is not woken by the pool, only by its own ack", () => {
    let now = 0;
    const budget = new SendBudget(10_000, { minShare: 0, chunk: 1000, stallMs: 1000, now: () => now });
    const { g, state } = gate(1 << 20, budget);
    g.took(10_000);
    state.held = 10_000;
    expect(g.admit()).toBe(false);
    now = 1500;
    budget.sweep(); // no ack for 1.5 s while holding: parked, its bytes leave the pool
    expect(budget.pooled).toBe(0);
    expect(state.drains).toBe(0); // room in the pool, but a parked session stays blocked
    g.released(1000); // an ack: progress, unparked (9000 back in the pool, under the limit)
    state.held = 9000;
    g.reopen(true);
    expect([state.drains, g.blocked, budget.pooled]).toEqual([1, false, 9000]);
  });

  test("after close, a wake-up drains nothing", () => {
    const budget = budgetOf(10_000);
    const other = gate(1 << 20, budget);
    other.g.took(9000);
    const { g, state } = gate(1 << 20, budget);
    g.took(2000);
    state.held = 2000;
    expect(g.admit()).toBe(false);
    g.close();
    other.g.released(9000);
    expect(state.drains).toBe(0);
  });
});
