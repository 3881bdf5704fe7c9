/**
 * Send path: Scheduler.pick over 16 stripes, in each mode.
 *
 * The stripes differ (seeded): delivery rates of 20–200 MB/s, RTTs of 1–40 ms. Each pick puts a 64 KiB
 * frame in flight on the stripe chosen; a stripe whose socket holds 512 KiB unwritten reports
 * congestion. When pick returns -1 (everything capped or congested), an ack-and-drain round clears all
 * in-flight bytes, as the session would after acks and drains. So every mode meets its skip, cap and
 * wait branches; the round costs 16 stores about once per 128 picks.
 */

import { do_not_optimize } from "mitata";
import { StripeLedger } from "../src/stripe/ledger.ts";
import { createScheduler, frameFor, SCHEDULER_MODES, type SchedulerMode, type StripeView } from "../src/stripe/scheduler.ts";
import { prng, type Case, type Steady, registerSummary, runStandalone } from "./micro.ts";

const STRIPES = 16;
const FRAME = 64 * 1024;
const SOCKET_BUFFER = 512 * 1024;

/** A stripe with a fixed rate, RTT, cap and frame (what measured() would have set). */
class BenchStripe extends StripeLedger implements StripeView {
  usable = true;
  congested = false;
  planned = 0;
  cap: number;
  aggregation = 0;
  frame: number;

  constructor(
    readonly index: number,
    public rate: number,
    public rtt: number,
  ) {
    super(0);
    // The rate mode's cap: about the BDP plus 15 ms of the rate.
    this.cap = (rate * (rtt + 15)) / 1000;
    this.frame = frameFor(rate, FRAME);
  }
}

function schedule(mode: SchedulerMode): Steady {
  const rnd = prng(3);
  const stripes: StripeView[] = Array.from({ length: STRIPES }, (_, i) => new BenchStripe(i, 20e6 + Math.floor(rnd() * 180e6), 1 + rnd() * 39));
  const scheduler = createScheduler(mode);
  let waits = 0;
  const op = () => {
    const i = scheduler.pick(stripes);
    if (i < 0) {
      waits++;
      for (let k = 0; k < STRIPES; k++) {
        const s = stripes[k]!;
        s.inflight = 0;
        s.congested = false;
      }
    } else {
      const s = stripes[i]!;
      s.inflight += FRAME;
      if (s.inflight >= SOCKET_BUFFER) s.congested = true;
    }
    do_not_optimize(i);
  };
  const PROBE = 100_000;
  for (let n = 0; n < PROBE; n++) op();
  return { bytes: 0, unit: "pick", note: `waits (−1) on ${((100 * waits) / PROBE).toFixed(1)}% of picks`, op };
}

const schedulerCase: Case<SchedulerMode> = {
  name: "Scheduler.pick 16 stripes $mode",
  arg: "mode",
  values: SCHEDULER_MODES,
  setup: schedule,
};
export const cases: Case<SchedulerMode>[] = [schedulerCase];

registerSummary(cases);
if (import.meta.main) await runStandalone(cases);
