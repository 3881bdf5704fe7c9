/**
 * Small helpers shared by the test files: a seeded PRNG, an assertion for ProtocolError codes, a
 * polling wait with a watchdog that names what did not happen, and per-test cleanup.
 */

import { afterEach, expect } from "bun:test";
import { ProtocolError, StriperError, type ErrorCode } from "../../src/errors.ts";

// --- seeded randomness -----------------------------------------------------------------------------

/**
 * mulberry32: a small, fast PRNG seeded with a 32-bit integer. Returns a function giving floats in
 * [0, 1); the same seed always gives the same sequence, so a failing seed can be replayed.
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A uniform integer in [lo, hi] (both inclusive) drawn from `rand`. */
export const randInt = (rand: () => number, lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));

// --- assertions ------------------------------------------------------------------------------------

/** Expects `fn` to throw a ProtocolError (and so a StriperError) whose code is `code`. */
export function expectProtocolError(fn: () => unknown, code: ErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect(caught).toBeInstanceOf(StriperError);
  expect((caught as ProtocolError).code).toBe(code);
}

// --- waiting ---------------------------------------------------------------------------------------

/**
 * Resolves once `cond()` holds: checked now, every 5 ms, and whenever a function in `wake` is called
 * (a recorder that notifies its waiters on each event passes its set, so the wait ends on the event
 * itself rather than on the next poll). Rejects after `ms` with "within <ms> ms, did not happen:
 * <what>"; `what` may be a function, evaluated only then, to add the state at the time of failure.
 * Rejects at once with the error if `cond` throws.
 */
export function until(cond: () => boolean, what: string | (() => string), ms = 10_000, wake?: Set<() => void>): Promise<void> {
  return new Promise((resolve, reject) => {
    try {
      if (cond()) return resolve();
    } catch (err) {
      return reject(err);
    }
    let settled = false;
    const stop = () => {
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      wake?.delete(check);
    };
    const check = () => {
      if (settled) return;
      try {
        if (!cond()) return;
      } catch (err) {
        stop();
        reject(err);
        return;
      }
      stop();
      resolve();
    };
    const poll = setInterval(check, 5);
    const timer = setTimeout(() => {
      check(); // one last look at the deadline, as a poll there would have had
      if (settled) return;
      stop();
      reject(new Error(`within ${ms} ms, did not happen: ${typeof what === "string" ? what : what()}`));
    }, ms);
    wake?.add(check);
  });
}

// --- cleanup ---------------------------------------------------------------------------------------

/** Something a test started and must stop: may return a promise, which is awaited. */
export type Cleanup = () => unknown;

/**
 * Registers an afterEach (for the calling test file) that runs the functions pushed on the returned
 * list, last pushed first, awaiting each, and empties it. Every function runs even if one throws; the
 * first error is rethrown after the rest. Call once at the top level of a test file:
 *
 *     const cleanup = cleanups();
 *     cleanup.push(() => server.stop());
 *
 * A test may also `await cleanup.pop()!()` to stop the last thing it started early.
 */
export function cleanups(): Cleanup[] {
  const list: Cleanup[] = [];
  afterEach(async () => {
    let failed = false;
    let first: unknown;
    while (list.length) {
      try {
        await list.pop()!();
      } catch (err) {
        if (!failed) [failed, first] = [true, err];
      }
    }
    if (failed) throw first;
  });
  return list;
}
