/**
 * Log lines about single stripes that a proxy drops or refuses after authentication, aggregated per
 * error code and source address (LogAggregator, src/proxy/log.ts): the first of a kind as it happens,
 * then one summary per interval while they continue ("312 stripes from 203.0.113.7 dropped in the last
 * 10 s: E_CONTROL_FLOOD"). Someone on the path can damage every stripe after every re-dial, and a key
 * holder can send floods or hit limits as often as it likes: neither may turn that into a line each.
 *
 * - dropped: a record did not authenticate (docs/protocol.md §3.4.4: damage in transit, or someone on
 *   the path changing bytes), or the peer sent control frames beyond the limits (E_CONTROL_FLOOD). The
 *   session re-sends what the stripe carried; nothing is lost.
 * - refused: an authenticated stripe refused with a status (session limits, unknown or ended session).
 */

import type { StriperError } from "../errors.ts";
import { escapeText, hostOfRemote, logEvent, type LogSink } from "./log.ts";
import { TimedAggregator } from "./timed-log.ts";

/** Kinds (code × source) tracked at once; beyond, events are counted together. */
const MAX_KINDS = 256;

/** What a dropped stripe's summary says happened, by error code. */
function dropMeaning(code: string): string {
  switch (code) {
    case "E_RECORD_AUTH":
      return "a record did not authenticate";
    case "E_CONTROL_FLOOD":
      return "control frames beyond the limits";
    default:
      return "the stripe failed";
  }
}

/** Aggregated lines for stripes dropped or refused, one kind per error code and source. */
export class DamageLog {
  private readonly agg: TimedAggregator;
  private readonly intervalMs: number;

  constructor(log: LogSink, opts: { intervalMs?: number; now?: () => number } = {}) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.agg = new TimedAggregator("stripe log flush", (ev) => logEvent(log, ev), { intervalMs: this.intervalMs, now: opts.now, maxKeys: MAX_KINDS });
  }

  /** Stripe `index` of session `session`, from `remote`, was dropped because of `err` (a RecordError or ControlFloodError). */
  note(session: string, index: number, err: StriperError, peer = "unknown"): void {
    const every = Math.round(this.intervalMs / 1000);
    const remote = escapeText(peer, 80); // formatRemote escaped it already; this keeps the line safe whatever the caller passes
    const host = hostOfRemote(peer);
    this.agg.note(
      `drop ${err.code} ${host}`,
      {
        level: "warn",
        event: "stripe.dropped",
        session,
        remote,
        msg: `session ${session} stripe ${index} dropped: ${err.code} ${err.message} (remote ${remote}; repeats are summarised every ${every} s)`,
      },
      (n, seconds) => ({
        level: "warn",
        event: "stripe.dropped.summary",
        remote: host,
        msg: `${n} stripe${n === 1 ? "" : "s"} from ${host} dropped in the last ${seconds} s: ${err.code} (${dropMeaning(err.code)}); their data was re-sent`,
        fields: { code: err.code, count: n, seconds },
      }),
    );
  }

  /** An authenticated stripe from `remote` was refused with `code` (E_SESSION_LIMIT, E_SOURCE_LIMIT…). */
  refused(peer: string, code: string, reason: string): void {
    const every = Math.round(this.intervalMs / 1000);
    const remote = escapeText(peer, 80);
    const host = hostOfRemote(peer);
    this.agg.note(
      `refuse ${code} ${host}`,
      { level: "warn", event: "stripe.refused", remote, msg: `stripe from ${remote} refused: ${code} ${reason} (repeats are summarised every ${every} s)` },
      (n, seconds) => ({
        level: "warn",
        event: "stripe.refused.summary",
        remote: host,
        msg: `${n} stripe${n === 1 ? "" : "s"} from ${host} refused in the last ${seconds} s: ${code}`,
        fields: { code, count: n, seconds },
      }),
    );
  }

  /** Logs summaries whose interval is over. */
  flush(): void {
    this.agg.flush();
  }

  /** Logs what is pending and stops the timer (the proxy is stopping). */
  close(): void {
    this.agg.close();
  }
}
