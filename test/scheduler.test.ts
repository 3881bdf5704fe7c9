/**
 * Scheduler: which stripe carries the next frame, in each mode. Pure units over hand-made stripe views;
 * -1 means "send nothing now" (the session then waits for a drain or an ack, and when its send store
 * fills it stops reading its source).
 */

import { describe, expect, test } from "bun:test";
import { MIN_INFLIGHT, RTT_MARGIN_MS, SCHEDULER_MODES, createScheduler, inflightCap, type Scheduler, type StripeView } from "../src/stripe/scheduler.ts";

const FRAME = 64 * 1024;

/** A usable, idle, unmeasured stripe with `over` applied. */
function stripe(over: Partial<StripeView> = {}): StripeView {
  return { usable: true, congested: false, inflight: 0, rate: 0, rtt: 0, minRtt: 0, srtt: 0, ...over };
}

function stripes(n: number): StripeView[] {
  return Array.from({ length: n }, () => stripe());
}

/** Picks `k` times in a row. */
function picks(s: Scheduler, views: readonly (StripeView | undefined)[], k: number, frame = FRAME): number[] {
  return Array.from({ length: k }, () => s.pick(views, frame));
}

test("SCHEDULER_MODES lists the three modes", () => {
  expect([...SCHEDULER_MODES]).toEqual(["rate", "until-congested", "round-robin"]);
});

test("no stripes at all: every mode waits", () => {
  for (const mode of SCHEDULER_MODES) expect(createScheduler(mode).pick([], FRAME)).toBe(-1);
});

test("holes (dead stripes, undefined) are skipped in every mode", () => {
  for (const mode of SCHEDULER_MODES) {
    const s = createScheduler(mode);
    expect(s.pick([undefined, stripe(), undefined], FRAME)).toBe(1);
    expect(s.pick([undefined, undefined], FRAME)).toBe(-1);
  }
  const rr = createScheduler("round-robin");
  expect(picks(rr, [stripe(), undefined, stripe(), undefined], 4)).toEqual([0, 2, 0, 2]);
});

describe("until-congested", () => {
  test("keeps sending on the same stripe while it is not congested", () => {
    const s = createScheduler("until-congested");
    expect(picks(s, stripes(4), 6)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  test("moves to the next stripe when the current one is congested, and stays there", () => {
    const s = createScheduler("until-congested");
    const v = stripes(4);
    expect(s.pick(v, FRAME)).toBe(0);
    v[0]!.congested = true;
    expect(picks(s, v, 3)).toEqual([1, 1, 1]);
    v[0]!.congested = false; // drained, but the scheduler does not go back
    expect(s.pick(v, FRAME)).toBe(1);
    v[1]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(2);
    v[2]!.congested = true;
    v[3]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(0); // wraps around to the first free one
  });

  test("skips unusable stripes", () => {
    const s = createScheduler("until-congested");
    const v = stripes(4);
    v[0]!.usable = false;
    v[1]!.usable = false;
    expect(picks(s, v, 2)).toEqual([2, 2]);
    v[2]!.usable = false;
    expect(s.pick(v, FRAME)).toBe(3);
    v[3]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(-1);
  });

  test("all stripes congested: waits (-1), then resumes on the first to drain after the last one used", () => {
    const s = createScheduler("until-congested");
    const v = stripes(3);
    expect(s.pick(v, FRAME)).toBe(0);
    v[0]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(1);
    for (const x of v) x.congested = true;
    expect(picks(s, v, 2)).toEqual([-1, -1]);
    v[0]!.congested = false;
    v[2]!.congested = false;
    expect(s.pick(v, FRAME)).toBe(2); // the search starts at the last stripe used (1)
  });

  test("a shrunken stripe list restarts from stripe 0", () => {
    const s = createScheduler("until-congested");
    const v = stripes(4);
    for (let i = 0; i < 3; i++) v[i]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(3);
    expect(s.pick(stripes(2), FRAME)).toBe(0);
  });
});

describe("round-robin", () => {
  test("strict order 0,1,2,3,0,1,...", () => {
    const s = createScheduler("round-robin");
    expect(picks(s, stripes(4), 10)).toEqual([0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
  });

  test("waits (-1) when the stripe whose turn it is is congested, even if others are free", () => {
    const s = createScheduler("round-robin");
    const v = stripes(4);
    expect(picks(s, v, 2)).toEqual([0, 1]);
    v[2]!.congested = true;
    expect(picks(s, v, 3)).toEqual([-1, -1, -1]);
    v[2]!.congested = false;
    expect(picks(s, v, 3)).toEqual([2, 3, 0]);
  });

  test("unusable stripes lose their turn", () => {
    const s = createScheduler("round-robin");
    const v = stripes(4);
    v[1]!.usable = false;
    expect(picks(s, v, 6)).toEqual([0, 2, 3, 0, 2, 3]);
    v[1]!.usable = true; // re-joined: back in the rotation at its place
    expect(picks(s, v, 5)).toEqual([0, 1, 2, 3, 0]);
  });

  test("an unusable stripe before a congested one: still waits for the congested one", () => {
    const s = createScheduler("round-robin");
    const v = stripes(4);
    expect(s.pick(v, FRAME)).toBe(0);
    v[1]!.usable = false;
    v[2]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(-1);
  });

  test("no usable stripe: waits (-1)", () => {
    const s = createScheduler("round-robin");
    const v = stripes(3);
    for (const x of v) x.usable = false;
    expect(picks(s, v, 2)).toEqual([-1, -1]);
  });
});

describe("rate", () => {
  test("inflightCap: unmeasured stripes get 4 × MIN_INFLIGHT; measured ones 2 × rate × (min RTT + margin), at least MIN_INFLIGHT", () => {
    expect(MIN_INFLIGHT).toBe(64 * 1024);
    expect(RTT_MARGIN_MS).toBe(30);
    expect(inflightCap(stripe())).toBe(4 * MIN_INFLIGHT);
    expect(inflightCap(stripe({ rate: 10e6, rtt: 20 }))).toBe(1_000_000); // 10 MB/s × 50 ms × 2
    expect(inflightCap(stripe({ rate: 10e6, rtt: 0 }))).toBe(600_000); // no RTT yet: margin only
    expect(inflightCap(stripe({ rate: 1000, rtt: 100 }))).toBe(MIN_INFLIGHT); // slow: the floor
  });

  test("picks the stripe that would deliver the frame soonest: least (inflight + frame) / rate", () => {
    const s = createScheduler("rate");
    // Idle: the faster stripe wins.
    expect(s.pick([stripe({ rate: 1e6, rtt: 100 }), stripe({ rate: 2e6, rtt: 100 })], FRAME)).toBe(1);
    // The fast stripe's queue outweighs its speed: 364 KB / 2 MB/s > 64 KB / 1 MB/s.
    expect(s.pick([stripe({ rate: 1e6, rtt: 100 }), stripe({ rate: 2e6, rtt: 100, inflight: 300_000 })], FRAME)).toBe(0);
    // Three stripes, in-flight proportional to rate except one lagging behind.
    const v = [
      stripe({ rate: 10e6, rtt: 50, inflight: 500_000 }), // (500k+64k)/10M = 56 ms
      stripe({ rate: 5e6, rtt: 50, inflight: 100_000 }), // (100k+64k)/5M = 33 ms
      stripe({ rate: 20e6, rtt: 50, inflight: 900_000 }), // (900k+64k)/20M = 48 ms
    ];
    expect(s.pick(v, FRAME)).toBe(1);
  });

  test("ties go to the lowest index", () => {
    const s = createScheduler("rate");
    expect(s.pick([stripe({ rate: 1e6, rtt: 10 }), stripe({ rate: 1e6, rtt: 10 })], FRAME)).toBe(0);
  });

  test("a stripe below its cap may take a frame of any size (the session sizes the batch to the room)", () => {
    // Testing inflight + frame against the cap starved slow stripes whose cap is close to one frame.
    const s = createScheduler("rate");
    const cap = inflightCap(stripe({ rate: 1e6, rtt: 20 })); // 100 000
    const v = [stripe({ rate: 1e6, rtt: 20, inflight: cap - 1 })];
    expect(s.pick(v, 1000)).toBe(0);
    expect(s.pick(v, 10 * cap)).toBe(0);
    v[0]!.inflight = cap;
    expect(s.pick(v, 1)).toBe(-1);
  });

  test("respects inflightCap: a stripe at its cap is skipped even when it would be fastest", () => {
    const s = createScheduler("rate");
    const fast = stripe({ rate: 100e6, rtt: 10 }); // cap 8 MB: 80 ms to deliver a frame when full
    const slow = stripe({ rate: 1e6, rtt: 100, inflight: 150_000 }); // 215 ms to deliver a frame
    fast.inflight = inflightCap(fast);
    expect(s.pick([fast, slow], FRAME)).toBe(1);
    fast.inflight = inflightCap(fast) - 1;
    expect(s.pick([fast, slow], FRAME)).toBe(0);
  });

  test("a stripe with nothing in flight may always take a frame, however large", () => {
    const s = createScheduler("rate");
    const v = [stripe({ rate: 1000, rtt: 10 })];
    expect(s.pick(v, 10 * inflightCap(v[0]!))).toBe(0);
  });

  test("prefers unmeasured stripes (so they get measured), up to their cap", () => {
    const s = createScheduler("rate");
    const measured = stripe({ rate: 1e9, rtt: 1 });
    const fresh = stripe({ inflight: 100_000 });
    expect(s.pick([measured, fresh], FRAME)).toBe(1);
    // Among unmeasured stripes, the one with less in flight.
    expect(s.pick([stripe({ inflight: 200_000 }), stripe({ inflight: 100_000 }), measured], FRAME)).toBe(1);
    // An unmeasured stripe at its cap (4 × MIN_INFLIGHT) is skipped.
    fresh.inflight = 4 * MIN_INFLIGHT;
    expect(s.pick([measured, fresh], FRAME)).toBe(0);
  });

  test("skips unusable and congested stripes", () => {
    const s = createScheduler("rate");
    const v = [stripe({ usable: false }), stripe({ congested: true }), stripe({ rate: 1, rtt: 1 })];
    expect(s.pick(v, FRAME)).toBe(2);
    v[2]!.congested = true;
    expect(s.pick(v, FRAME)).toBe(-1);
  });

  test("returns -1 when every stripe is at its cap", () => {
    const s = createScheduler("rate");
    const v = [stripe({ rate: 1e6, rtt: 20 }), stripe(), stripe({ rate: 50e6, rtt: 5 })];
    for (const x of v) x.inflight = inflightCap(x);
    expect(s.pick(v, FRAME)).toBe(-1);
    expect(s.pick(v, 1)).toBe(-1);
    v[1]!.inflight -= FRAME; // an ack freed room on one
    expect(s.pick(v, FRAME)).toBe(1);
  });

  test("keeps no position: the same views give the same answer", () => {
    const s = createScheduler("rate");
    const v = [stripe({ rate: 1e6, rtt: 20 }), stripe({ rate: 3e6, rtt: 20 })];
    expect(picks(s, v, 4)).toEqual([1, 1, 1, 1]);
  });
});

describe("frame size and batch allowance (the rest of the policy)", () => {
  const MAX = 256 * 1024;

  test("rate: frames of about 25 ms of the stripe's rate, 4 KiB to the session's frame size; 64 KiB unmeasured", () => {
    const s = createScheduler("rate", MAX);
    expect(s.frameSize(stripe())).toBe(64 * 1024);
    expect(createScheduler("rate", 16 * 1024).frameSize(stripe())).toBe(16 * 1024);
    expect(s.frameSize(stripe({ rate: 4e6 }))).toBe(100_000);
    expect(s.frameSize(stripe({ rate: 1e3 }))).toBe(4096);
    expect(s.frameSize(stripe({ rate: 1e9 }))).toBe(MAX);
  });

  test("rate: a batch may fill the room left below the cap, and is always at least one whole frame", () => {
    const s = createScheduler("rate", MAX);
    const v = stripe({ rate: 10e6, rtt: 20 }); // cap 1 000 000
    v.inflight = 400_000;
    expect(s.allowance(v, 64 * 1024)).toBe(600_000);
    v.inflight = inflightCap(v) - 10.5; // a fractional remainder once made empty frames
    expect(s.allowance(v, 64 * 1024)).toBe(64 * 1024);
    expect(Number.isInteger(s.allowance(stripe({ rate: 3.3e6, rtt: 7.7, inflight: 1.5 }), 4096))).toBe(true);
  });

  test("until-congested: full frames, no limit but the batch and the socket", () => {
    const s = createScheduler("until-congested", MAX);
    expect([s.frameSize(stripe({ rate: 1e3 })), s.allowance(stripe(), MAX)]).toEqual([MAX, Infinity]);
  });

  test("round-robin: full frames, one frame's worth of bytes per turn", () => {
    const s = createScheduler("round-robin", MAX);
    expect([s.frameSize(stripe({ rate: 1e3 })), s.allowance(stripe(), MAX)]).toEqual([MAX, MAX]);
  });

  test("rate: each stripe is sized by its own minimum RTT, at most twice the session's smallest", () => {
    const s = createScheduler("rate", MAX);
    const v = [stripe({ minRtt: 10 }), stripe({ minRtt: 464 }), stripe({ minRtt: 15 }), stripe({ minRtt: 1, usable: false }), stripe()];
    s.measured(v);
    expect(v.map((x) => x.rtt)).toEqual([10, 20, 15, 0, 0]); // unusable and unmeasured stripes are left alone
  });

  test("the other modes do not use RTTs and leave them as they are", () => {
    for (const mode of ["until-congested", "round-robin"] as const) {
      const v = [stripe({ minRtt: 10 }), stripe({ minRtt: 464 })];
      createScheduler(mode, MAX).measured(v);
      expect(v.map((x) => x.rtt)).toEqual([0, 0]);
    }
  });

  test("every mode halves a stalling stripe's rate estimate (the rescue penalty)", () => {
    for (const mode of SCHEDULER_MODES) {
      const v = stripe({ rate: 8e6 });
      createScheduler(mode, MAX).penalize(v);
      expect(v.rate).toBe(4e6);
    }
  });

  test("one object per mode, each saying which it is", () => {
    expect(SCHEDULER_MODES.map((m) => createScheduler(m).mode)).toEqual([...SCHEDULER_MODES]);
  });
});
