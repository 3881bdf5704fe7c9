/**
 * Scheduler: which stripe carries the next batch, in each mode, and the rest of the policy (frame size,
 * batch allowance, caps from the stripes' controllers, app-limited marks, the rescue penalty). Pure
 * units over hand-made stripe views and over ledgers driven by a small model of the session's pump; -1
 * means "send nothing now" (the session then waits for a drain or an ack, and when its send store fills
 * it stops reading its source).
 */

import { describe, expect, test } from "bun:test";
import { CONTROL } from "../src/stripe/control.ts";
import { StripeLedger } from "../src/stripe/ledger.ts";
import { FAST_FRAME, FRAME_MS, MIN_RATE_FRAME, QUANTUM_FRAMES, SCHEDULER_MODES, createScheduler, frameFor, type Scheduler, type StripeView } from "../src/stripe/scheduler.ts";

const FRAME = 64 * 1024;

/** A stripe as the session holds it, without the carrier: a ledger plus what the scheduler sets. */
class TestStripe extends StripeLedger implements StripeView {
  usable = true;
  congested = false;
  planned = 0;
  rate = 0;
  rtt = 0;
  cap = 0;
  aggregation = 0;
  frame = 0;
  appLimitedMarks = 0;

  constructor(
    readonly index: number,
    over: Partial<StripeView> = {},
  ) {
    super(0);
    Object.assign(this, over);
  }

  override markAppLimited(): void {
    this.appLimitedMarks++;
    super.markAppLimited();
  }
}

/** A usable, idle stripe with `over` applied (index 0 unless given). */
function stripe(over: Partial<StripeView> = {}): TestStripe {
  return new TestStripe(over.index ?? 0, over);
}

function stripes(n: number): TestStripe[] {
  return Array.from({ length: n }, (_, i) => new TestStripe(i));
}

/** Picks `k` times in a row. */
function picks(s: Scheduler, views: readonly (StripeView | undefined)[], k: number): number[] {
  return Array.from({ length: k }, () => s.pick(views));
}

test("SCHEDULER_MODES lists the three modes", () => {
  expect([...SCHEDULER_MODES]).toEqual(["rate", "until-congested", "round-robin"]);
});

test("no stripes at all: every mode waits", () => {
  for (const mode of SCHEDULER_MODES) expect(createScheduler(mode).pick([])).toBe(-1);
});

test("holes (dead stripes, undefined) are skipped in every mode", () => {
  for (const mode of SCHEDULER_MODES) {
    const s = createScheduler(mode);
    const v = [undefined, stripe({ index: 1 }), undefined];
    s.measured(v, 0);
    expect(s.pick(v)).toBe(1);
    expect(s.pick([undefined, undefined])).toBe(-1);
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
    expect(s.pick(v)).toBe(0);
    v[0]!.congested = true;
    expect(picks(s, v, 3)).toEqual([1, 1, 1]);
    v[0]!.congested = false; // drained, but the scheduler does not go back
    expect(s.pick(v)).toBe(1);
    v[1]!.congested = true;
    expect(s.pick(v)).toBe(2);
    v[2]!.congested = true;
    v[3]!.congested = true;
    expect(s.pick(v)).toBe(0); // wraps around to the first free one
  });

  test("skips unusable stripes", () => {
    const s = createScheduler("until-congested");
    const v = stripes(4);
    v[0]!.usable = false;
    v[1]!.usable = false;
    expect(picks(s, v, 2)).toEqual([2, 2]);
    v[2]!.usable = false;
    expect(s.pick(v)).toBe(3);
    v[3]!.congested = true;
    expect(s.pick(v)).toBe(-1);
  });

  test("all stripes congested: waits (-1), then resumes on the first to drain after the last one used", () => {
    const s = createScheduler("until-congested");
    const v = stripes(3);
    expect(s.pick(v)).toBe(0);
    v[0]!.congested = true;
    expect(s.pick(v)).toBe(1);
    for (const x of v) x.congested = true;
    expect(picks(s, v, 2)).toEqual([-1, -1]);
    v[0]!.congested = false;
    v[2]!.congested = false;
    expect(s.pick(v)).toBe(2); // the search starts at the last stripe used (1)
  });

  test("a shrunken stripe list restarts from stripe 0", () => {
    const s = createScheduler("until-congested");
    const v = stripes(4);
    for (let i = 0; i < 3; i++) v[i]!.congested = true;
    expect(s.pick(v)).toBe(3);
    expect(s.pick(stripes(2))).toBe(0);
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
    expect(s.pick(v)).toBe(0);
    v[1]!.usable = false;
    v[2]!.congested = true;
    expect(s.pick(v)).toBe(-1);
  });

  test("no usable stripe: waits (-1)", () => {
    const s = createScheduler("round-robin");
    const v = stripes(3);
    for (const x of v) x.usable = false;
    expect(picks(s, v, 2)).toEqual([-1, -1]);
  });
});

/**
 * A small model of the session: `paths[i]` (bytes per ms, one-way ms) behind stripe i. Every 2 ms: the
 * frames that arrived are confirmed (one ACK), measured(), then a pump as the session's sendPlanned():
 * pick, frameSize and allowance plan frames (counted in `planned`) while `backlog` bytes wait, then each
 * stripe's planned frames are sent (one write per stripe; counted). A frame waits behind what its
 * bottleneck holds, crosses it, then the delay and the ack back. Returns the stripes, the bytes each
 * carried, the largest queue (ms) a frame met, and the writes.
 */
function pumpModel(paths: { rate: number; delayMs: number }[], ms: number, backlog = Infinity) {
  const sched = createScheduler("rate");
  const v = paths.map((_, i) => new TestStripe(i));
  sched.measured(v, 0);
  const free = paths.map(() => 0);
  const flying: { end: number; at: number }[][] = paths.map(() => []);
  const carried = paths.map(() => 0);
  const plans: number[][] = paths.map(() => []);
  let left = backlog;
  let maxQueueMs = 0;
  let offset = 0;
  let writes = 0;
  for (let t = 0; t <= ms; t += 2) {
    for (let i = 0; i < v.length; i++) {
      const arrived = flying[i]!.filter((f) => f.at <= t);
      if (arrived.length === 0) continue;
      flying[i] = flying[i]!.filter((f) => f.at > t);
      v[i]!.confirm(arrived[arrived.length - 1]!.end, t);
    }
    sched.measured(v, t);
    while (left > 0) {
      const i = sched.pick(v);
      if (i < 0) break;
      const s = v[i]!;
      const frame = sched.frameSize(s);
      let allow = Math.min(sched.allowance(s, frame), left);
      while (allow > 0) {
        const len = Math.min(frame, allow);
        plans[i]!.push(len);
        s.planned += len;
        allow -= len;
        left -= len;
      }
    }
    for (let i = 0; i < v.length; i++) {
      const s = v[i]!;
      if (plans[i]!.length === 0) continue;
      writes++;
      for (const len of plans[i]!) {
        const p = paths[i]!;
        const start = Math.max(t, free[i]!);
        free[i] = start + len / p.rate;
        maxQueueMs = Math.max(maxQueueMs, start - t);
        s.sent += len + 16;
        s.record(offset, len, s.sent, t);
        flying[i]!.push({ end: s.sent, at: free[i]! + 2 * p.delayMs });
        offset += len;
        carried[i]! += len;
      }
      plans[i]!.length = 0;
      s.planned = 0;
    }
    sched.stopped(v, left > 0);
  }
  return { v, carried, maxQueueMs, writes };
}

describe("rate", () => {
  test("picks the stripe that would deliver its next frame soonest: least (inflight + frame) / rate", () => {
    const s = createScheduler("rate");
    const cap = 1e9;
    // Idle: the faster stripe wins.
    expect(s.pick([stripe({ rate: 1e6, cap, frame: FRAME }), stripe({ rate: 2e6, cap, frame: FRAME })])).toBe(1);
    // The fast stripe's queue outweighs its speed: 364 KB / 2 MB/s > 64 KB / 1 MB/s.
    expect(s.pick([stripe({ rate: 1e6, cap, frame: FRAME }), stripe({ rate: 2e6, cap, frame: FRAME, inflight: 300_000 })])).toBe(0);
    // Each stripe is judged by its own frame: a big frame on the slow stripe makes it later.
    expect(s.pick([stripe({ rate: 1e6, cap, frame: 8000 }), stripe({ rate: 2e6, cap, frame: 8000, inflight: 20_000 })])).toBe(0);
    expect(s.pick([stripe({ rate: 1e6, cap, frame: 64_000 }), stripe({ rate: 2e6, cap, frame: 8000, inflight: 20_000 })])).toBe(1);
  });

  test("ties go to the lowest index", () => {
    const s = createScheduler("rate");
    expect(s.pick([stripe({ rate: 1e6, cap: 1e6, frame: 4096 }), stripe({ rate: 1e6, cap: 1e6, frame: 4096 })])).toBe(0);
  });

  test("a stripe below its cap may take a frame; one at its cap is skipped even when it would be fastest", () => {
    const s = createScheduler("rate");
    const fast = stripe({ rate: 100e6, cap: 200_000, frame: 65_536, inflight: 199_999, planned: 0 });
    const slow = stripe({ rate: 1e6, cap: 50_000, frame: 16_384, inflight: 30_000 });
    // Planned frames count as held; below the cap the stripe may take one more, at the cap it may not.
    fast.inflight = 0;
    fast.planned = 199_999;
    expect(s.pick([fast, slow])).toBe(0);
    fast.planned = 200_000;
    expect(s.pick([fast, slow])).toBe(1);
    slow.planned = 20_000;
    expect(s.pick([fast, slow])).toBe(-1);
  });

  test("a stripe with data in flight and nothing planned waits for room for a quantum (two frames, at most a quarter of its cap)", () => {
    const s = createScheduler("rate");
    expect(QUANTUM_FRAMES).toBe(2);
    const a = stripe({ rate: 4e6, cap: 144_000, frame: 16_384, inflight: 144_000 - 2 * 16_384 + 1 });
    expect(s.pick([a])).toBe(-1); // one byte short of two frames of room
    a.inflight -= 1;
    expect(s.pick([a])).toBe(0);
    // Idle: always, whatever the room. A small cap: a quarter of it is the quantum.
    const b = stripe({ rate: 0.4e6, cap: 20_000, frame: 16_384, inflight: 15_000 });
    expect(s.pick([b])).toBe(0);
    b.inflight = 15_001;
    expect(s.pick([b])).toBe(-1);
    b.inflight = 0;
    b.cap = 1000;
    expect(s.pick([b])).toBe(0);
  });

  test("skips unusable and congested stripes, and stripes with no cap or rate yet (measured() sets them)", () => {
    const s = createScheduler("rate");
    const v = [stripe({ usable: false, rate: 1, cap: 1e6, frame: 1 }), stripe({ congested: true, rate: 1, cap: 1e6, frame: 1 }), stripe()];
    expect(s.pick(v)).toBe(-1);
    s.measured(v, 0);
    expect(s.pick(v)).toBe(2);
    v[2]!.congested = true;
    expect(s.pick(v)).toBe(-1);
  });

  test("new stripes start at the initial cap and are compared at a common rate: the one with less in flight wins", () => {
    const s = createScheduler("rate");
    const v = stripes(3);
    s.measured(v, 0);
    expect(v.map((x) => x.cap)).toEqual([CONTROL.initialCap, CONTROL.initialCap, CONTROL.initialCap]);
    expect(new Set(v.map((x) => x.rate)).size).toBe(1);
    v[0]!.inflight = 20_000;
    v[1]!.inflight = 10_000;
    v[2]!.inflight = 30_000;
    expect(s.pick(v)).toBe(1);
  });

  test("frames: FRAME_MS of the stripe's rate, at least MIN_RATE_FRAME, the session's frame from FAST_FRAME on", () => {
    expect([FRAME_MS, MIN_RATE_FRAME, FAST_FRAME]).toEqual([4, 8192, 65_536]);
    expect(frameFor(4e6, 256 * 1024)).toBe(16_000);
    expect(frameFor(1e6, 256 * 1024)).toBe(8192); // 4 ms would be 4000: the floor
    expect(frameFor(0.4e6, 256 * 1024)).toBe(8192);
    expect(frameFor(16e6, 256 * 1024)).toBe(64_000);
    expect(frameFor(16.4e6, 256 * 1024)).toBe(256 * 1024);
    expect(frameFor(4e6, 2048)).toBe(2048); // never above the session's frame size
    const s = createScheduler("rate", 256 * 1024);
    expect(s.frameSize(stripe({ rate: 4e6, frame: 8000 }))).toBe(8000);
  });

  test("allowance: one frame at a time on a stripe with small frames (the next may go elsewhere), whole bytes", () => {
    const s = createScheduler("rate");
    const a = stripe({ rate: 4e6, cap: 144_000, frame: 16_384, inflight: 40_000 });
    expect(s.allowance(a, 16_384)).toBe(16_384);
    a.inflight = 143_999.5;
    expect(s.allowance(a, 16_384)).toBe(16_384);
  });

  test("allowance: a fast stripe (full frames) may fill the room below its cap at once", () => {
    const s = createScheduler("rate");
    const a = stripe({ rate: 400e6, cap: 8e6, frame: 256 * 1024, inflight: 1e6, planned: 1e6 });
    expect(s.allowance(a, 256 * 1024)).toBe(6e6);
    a.planned = 7.9e6;
    expect(s.allowance(a, 256 * 1024)).toBe(256 * 1024);
  });

  test("stopped(): a stripe without room for a quantum is using its cap; one with room, when the session ran dry, is app-limited", () => {
    const s = createScheduler("rate");
    const v = stripes(3);
    s.measured(v, 0);
    v[0]!.inflight = v[0]!.cap - 1; // no room for a quantum
    v[1]!.inflight = v[1]!.cap * 0.5;
    s.stopped(v, true); // data left: nobody is app-limited
    expect(v.map((x) => x.appLimitedMarks)).toEqual([0, 0, 0]);
    s.stopped(v, false); // ran dry: the stripes with room are app-limited, the one at its cap is not
    expect(v.map((x) => x.appLimitedMarks)).toEqual([0, 1, 1]);
  });

  test("model: equal paths share a greedy transfer evenly, each holding about its BDP plus the headroom", () => {
    const r = pumpModel([0, 1, 2, 3].map(() => ({ rate: 4000, delayMs: 10 })), 3000);
    const total = r.carried.reduce((a, b) => a + b, 0);
    // Four 4 MB/s stripes over 3 s (startup included): near 48 MB, evenly spread.
    expect(total).toBeGreaterThan(4 * 4000 * 3000 * 0.95);
    for (const c of r.carried) expect(c / total).toBeCloseTo(0.25, 1);
    for (const x of r.v) {
      expect(x.cap).toBeLessThan(4000 * (20 + CONTROL.headroomMs) * 1.25);
      expect(x.rate).toBeGreaterThan(4e6 * 0.95);
    }
    // Past startup the queue at each bottleneck stays near the headroom: nothing like the old 100 ms.
    expect(r.maxQueueMs).toBeLessThan(60);
    // Each stripe's frames leave in writes of a quantum or more: at most one write per two frames.
    const frames = total / 16_000;
    expect(r.writes).toBeLessThan(frames / 1.8);
  });

  test("model: a stripe at a tenth of the others' rate carries about a tenth as much", () => {
    const paths = [4000, 4000, 4000, 400].map((rate) => ({ rate, delayMs: 10 }));
    const r = pumpModel(paths, 4000);
    const share = r.carried[3]! / r.carried[0]!;
    expect(share).toBeGreaterThan(0.07);
    expect(share).toBeLessThan(0.13);
    // Its round trip includes a frame's crossing of its bottleneck (8 KiB at 0.4 MB/s: 20 ms) and up to
    // 2 ms of ACK delay; its cap is its BDP over that plus the headroom, nothing like the fast stripes'.
    const slow = r.v[3]!;
    expect(slow.rate).toBeLessThan(400e3 * 1.2);
    expect(slow.rtt).toBeLessThanOrEqual(20 + MIN_RATE_FRAME / 400 + 2);
    expect(slow.cap).toBeLessThan((slow.rate * (slow.rtt + CONTROL.headroomMs) * 1.15) / 1000);
    expect(slow.cap).toBeLessThan(r.v[0]!.cap / 5);
  });

  test("model: a window-limited app's data is spread over every stripe, not queued on the measured few", () => {
    // 16 stripes, 1 MB at a time: no stripe ever reaches its cap, so none is validated.
    const paths = Array.from({ length: 16 }, () => ({ rate: 4000, delayMs: 10 }));
    const r = pumpModel(paths, 200, 1_000_000);
    const least = Math.min(...r.carried);
    const most = Math.max(...r.carried);
    expect(least).toBeGreaterThan(0);
    expect(most / least).toBeLessThan(1.5);
  });
});

describe("every mode measures; only rate caps", () => {
  test("measured() gives every mode each stripe's rate and minimum RTT from its controller", () => {
    for (const mode of SCHEDULER_MODES) {
      const sched = createScheduler(mode);
      const v = stripe();
      sched.measured([v], 0);
      v.record(0, 40_000, 40_016, 0);
      v.confirm(40_016, 20); // 40 000 bytes in 20 ms: 2 MB/s
      sched.measured([v], 20);
      expect(v.rtt).toBe(20);
      expect(v.rate).toBe(2e6);
      expect(v.cap > 0).toBe(mode === "rate");
    }
  });

  test("until-congested: full frames, no limit but the batch and the socket", () => {
    const s = createScheduler("until-congested", 256 * 1024);
    expect([s.frameSize(stripe({ rate: 1e3 })), s.allowance(stripe(), 256 * 1024)]).toEqual([256 * 1024, Infinity]);
  });

  test("round-robin: full frames, one frame's worth of bytes per turn", () => {
    const s = createScheduler("round-robin", 256 * 1024);
    expect([s.frameSize(stripe({ rate: 1e3 })), s.allowance(stripe(), 256 * 1024)]).toEqual([256 * 1024, 256 * 1024]);
  });

  test("the rescue penalty halves a rate stripe's cap; the other modes take it without effect", () => {
    const r = pumpModel([{ rate: 4000, delayMs: 10 }], 2000);
    const s = r.v[0]!;
    const sched = createScheduler("rate");
    sched.measured([s], 2000);
    const before = s.cap;
    sched.penalize(s, 2000);
    sched.measured([s], 2000);
    expect(s.cap).toBeLessThan(before * 0.6);
    for (const mode of ["until-congested", "round-robin"] as const) {
      const other = createScheduler(mode);
      const x = stripe();
      other.measured([x], 0);
      other.penalize(x, 0);
      expect(x.cap).toBe(0);
    }
  });

  test("one object per mode, each saying which it is", () => {
    expect(SCHEDULER_MODES.map((m) => createScheduler(m).mode)).toEqual([...SCHEDULER_MODES]);
  });
});
