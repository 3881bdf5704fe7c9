/**
 * The manual clock the session tests run on (test/helpers/clock.ts): timers fire only inside advance(),
 * in due order, each seeing its own due time.
 */

import { expect, test } from "bun:test";
import { ManualClock } from "./helpers/clock.ts";

test("timers fire in due order inside advance(), each at its due time", () => {
  const c = new ManualClock(100);
  const seen: string[] = [];
  c.setTimeout(() => seen.push(`b@${c.now()}`), 20);
  c.setTimeout(() => seen.push(`a@${c.now()}`), 10);
  c.setTimeout(() => seen.push(`c@${c.now()}`), 20); // same time as b: set later, fires later
  c.advance(9);
  expect(seen).toEqual([]);
  c.advance(11);
  expect(seen).toEqual(["a@110", "b@120", "c@120"]);
  expect(c.now()).toBe(120);
  expect(c.pending).toBe(0);
});

test("intervals repeat; cleared timers never fire; a timer set by a callback fires if due within the advance", () => {
  const c = new ManualClock();
  const seen: number[] = [];
  const tick = c.setInterval(() => seen.push(c.now()), 250);
  const never = c.setTimeout(() => seen.push(-1), 300);
  c.clearTimeout(never);
  c.setTimeout(() => c.setTimeout(() => seen.push(c.now() + 0.5), 5), 600);
  c.advance(1000);
  expect(seen).toEqual([250, 500, 605.5, 750, 1000]);
  c.clearInterval(tick);
  c.advance(1000);
  expect(seen.length).toBe(5);
  c.clearTimeout(undefined); // harmless
});

test("time only moves forward", () => {
  expect(() => new ManualClock().advance(-1)).toThrow(RangeError);
});
