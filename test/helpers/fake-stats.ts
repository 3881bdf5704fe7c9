/**
 * A StatsSource whose numbers the test moves: `step()` advances every session and counter by an
 * amount derived from the step number, so two snapshots always differ and each is reproducible.
 */

import { DURATION_BUCKETS, HistogramRecorder, RTT_BUCKETS, type CounterSnapshot, type SessionSnapshot, type StatsSource } from "../../src/ops/stats.ts";

/** See module comment. `sessions` live sessions of `stripes` stripes each. */
export class FakeStats implements StatsSource {
  readonly role = "server" as const;
  steps = 0;
  private readonly rtt = new HistogramRecorder(RTT_BUCKETS);
  private readonly durations = new HistogramRecorder(DURATION_BUCKETS);
  private live: SessionSnapshot[];
  private refused = { limit: 0, draining: 0 };
  private deaths = { reset: 0, silent: 0 };
  private rejections = { "bad-auth": 0, replay: 0 };

  constructor(
    sessions = 2,
    private readonly stripes = 3,
    private readonly t0 = Date.now() - 95_000,
  ) {
    this.live = Array.from({ length: sessions }, (_, i) => this.session(i));
  }

  private session(i: number): SessionSnapshot {
    return {
      id: `5e55${String(i).padStart(8, "0")}`,
      listener: "127.0.0.1:7000",
      remote: `127.0.0.1:${40000 + i}`,
      startedAt: this.t0 + i * 1000,
      bytesUp: 0,
      bytesDown: 0,
      sendBufferBytes: 0,
      reorderBytes: 0,
      stripeDeaths: 0,
      resentBytes: 0,
      stripes: Array.from({ length: this.stripes }, (_, k) => ({
        index: k,
        usable: true,
        rateBytesPerSecond: 0,
        inflightBytes: 0,
        rttSeconds: 0,
        stalls: 0,
        resentBytes: 0,
        sentBytes: 0,
        receivedBytes: 0,
      })),
    };
  }

  /** Moves every figure on: rates and RTTs take new values, counters grow. */
  step(): void {
    const n = ++this.steps;
    this.live.forEach((s, i) => {
      s.bytesUp += 1_000_000 * (i + 1) + n;
      s.bytesDown += 500_000 * (i + 1) + n;
      s.sendBufferBytes = 65536 * ((n + i) % 5);
      s.stripes.forEach((st, k) => {
        st.rateBytesPerSecond = 1_000_000 * (k + 1) + 10_000 * ((n * 7 + i) % 13);
        st.inflightBytes = 16384 * ((n + k) % 7);
        st.rttSeconds = 0.01 + 0.001 * ((n * 3 + k + i) % 11);
        st.stalls += k;
        st.sentBytes += st.rateBytesPerSecond;
        st.receivedBytes += st.rateBytesPerSecond / 2;
        if (n % 3 === 0 && k === 0) st.resentBytes += 4096;
        this.rtt.observe(st.rttSeconds);
      });
      s.resentBytes = s.stripes.reduce((t, x) => t + x.resentBytes, 0);
    });
    this.refused.limit += n % 2;
    this.deaths.reset += 1;
    this.rejections["bad-auth"] += 2;
    if (n % 4 === 0) this.durations.observe(n * 1.5);
  }

  /** Ends the newest live session (its lifetime goes into the duration histogram). */
  endSession(): void {
    const s = this.live.pop();
    if (s) this.durations.observe(this.steps);
  }

  sessions(): readonly SessionSnapshot[] {
    return structuredClone(this.live);
  }

  counters(): Partial<CounterSnapshot> {
    return {
      sessionsTotal: this.live.length + this.steps,
      sessionsRefused: { ...this.refused },
      bytesUp: this.live.reduce((t, s) => t + s.bytesUp, 0),
      bytesDown: this.live.reduce((t, s) => t + s.bytesDown, 0),
      resentBytes: this.live.reduce((t, s) => t + s.resentBytes, 0),
      ackBytes: 48 * this.steps,
      stripeDeaths: { ...this.deaths },
      redials: this.steps * 2,
      handshakeRejections: { ...this.rejections },
      stripeRttSeconds: this.rtt.snapshot(),
      sessionDurationSeconds: this.durations.snapshot(),
    };
  }

  budget() {
    return { usedBytes: this.live.reduce((t, s) => t + s.sendBufferBytes, 0), limitBytes: 32 * 1024 * 1024 };
  }
}
