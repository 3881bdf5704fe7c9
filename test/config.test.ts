/**
 * Session option validation (src/config.ts): the ranges the command line enforces, checked for library
 * users too, with a ConfigError that names the option. A StripedPipe refuses bad options when built.
 */

import { describe, expect, test } from "bun:test";
import { DEFAULT_SESSION_OPTIONS, SESSION_LIMITS, STRIPE_COUNT, checkRange, validateSessionOptions, type SessionOptions } from "../src/config.ts";
import { ConfigError, StriperError } from "../src/errors.ts";
import { StripedPipe } from "../src/pipe/striped.ts";
import { SendBudget } from "../src/stripe/budget.ts";

const good: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, role: "client" };

/** The ConfigError that validating `opts` throws. */
function refusal(opts: SessionOptions): ConfigError {
  try {
    validateSessionOptions(opts);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(StriperError);
    return err as ConfigError;
  }
  throw new Error(`options were accepted: ${JSON.stringify(opts)}`);
}

describe("ranges", () => {
  test("are the command line's", () => {
    expect(SESSION_LIMITS).toEqual({
      window: { min: 65536, max: 1073741824 },
      frameSize: { min: 1024, max: 1048576 },
      batchSize: { min: 16384, max: 16777216 },
      keepaliveMs: { min: 50, max: 600000 },
      deadMs: { min: 100, max: 3600000 },
      graceMs: { min: 0, max: 3600000 },
    });
    expect(STRIPE_COUNT).toEqual({ min: 1, max: 64 });
  });

  test("the defaults pass, for both roles", () => {
    expect(validateSessionOptions(good)).toBe(good);
    expect(() => validateSessionOptions({ ...good, role: "server" })).not.toThrow();
  });

  test("each limit is inclusive: the bounds pass, one beyond is E_BAD_OPTION naming the option", () => {
    for (const [name, range] of Object.entries(SESSION_LIMITS)) {
      const at = (v: number): SessionOptions => {
        const o = { ...good, [name]: v };
        // keep deadMs > keepaliveMs while probing either of them
        if (name === "keepaliveMs") o.deadMs = 3_600_000;
        if (name === "deadMs") o.keepaliveMs = 50;
        return o;
      };
      expect(() => validateSessionOptions(at(range.min))).not.toThrow();
      expect(() => validateSessionOptions(at(range.max))).not.toThrow();
      for (const bad of [range.min - 1, range.max + 1, range.min + 0.5, Number.NaN]) {
        const e = refusal(at(bad));
        expect([e.code, e.option]).toEqual(["E_BAD_OPTION", name]);
        expect(e.message).toContain(name);
      }
    }
  });

  test("deadMs must be longer than keepaliveMs", () => {
    const e = refusal({ ...good, keepaliveMs: 1000, deadMs: 1000 });
    expect(e.option).toBe("deadMs");
    expect(() => validateSessionOptions({ ...good, keepaliveMs: 1000, deadMs: 1001 })).not.toThrow();
  });

  test("an unknown scheduler or role is refused", () => {
    expect(refusal({ ...good, scheduler: "fastest" as SessionOptions["scheduler"] }).option).toBe("scheduler");
    expect(refusal({ ...good, role: "peer" as SessionOptions["role"] }).option).toBe("role");
  });

  test("checkRange is exported for other options (the CLI's stripe count)", () => {
    expect(() => checkRange("stripes", 64, STRIPE_COUNT)).not.toThrow();
    expect(() => checkRange("stripes", 65, STRIPE_COUNT)).toThrow(ConfigError);
  });
});

test("a StripedPipe with bad options throws at construction and takes no share of the budget", () => {
  const budget = new SendBudget(1 << 20);
  expect(() => new StripedPipe({ ...good, window: 1000 }, undefined, budget)).toThrow(ConfigError);
  expect(budget.sessions).toBe(0);
});
