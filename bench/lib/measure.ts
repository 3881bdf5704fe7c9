/**
 * What a standard transfer delivered, from the app's and the target's reports alone (pure).
 *
 * Throughput = payload bytes / (app starts connecting → last byte at the receiver): upload ends at the
 * target's last received byte, download at the app's, echo when the app's last connection closed.
 */

import type { Dir, RunSpec } from "./types.ts";

type Ev = Record<string, unknown>;

/** A number field of a report, 0 when absent. */
export const num = (v: unknown): number => (typeof v === "number" ? v : 0);

/** Bytes, seconds and integrity of one transfer. */
export interface Delivery {
  bytes: number;
  seconds: number;
  intact: boolean;
  sessions?: { total: number; intact: number };
  /** The first error either end reported, if any. */
  firstError?: string;
}

const errors = (xs: Ev[]): string[] => xs.map((c) => c.error).filter((e) => e !== null && e !== undefined).map(String);
const sorted = (xs: unknown[]): string => xs.map(String).sort().join(",");

/**
 * Accounts one transfer: `done` is the app's {"event":"done"} report, `tc` the target's
 * {"event":"conn"} reports. Hashes are compared as sets, since connections end in any order.
 */
export function deliver(spec: Pick<RunSpec, "dir" | "conns" | "hash">, done: Ev, tc: Ev[]): Delivery {
  const conns = (done.conns as Ev[] | undefined) ?? [];
  const appErrors = errors(conns);
  const targetErrors = errors(tc);
  const clean = appErrors.length === 0 && targetErrors.length === 0;
  const t0 = num(done.t0);
  const firstError = appErrors[0] ?? targetErrors[0];
  const dir: Dir = spec.dir;
  let d: Delivery;
  switch (dir) {
    case "up": {
      const bytes = tc.reduce((a, c) => a + num(c.bytesIn), 0);
      const sent = conns.reduce((a, c) => a + num(c.sent), 0);
      d = {
        bytes,
        seconds: (Math.max(...tc.map((c) => num(c.tLast))) - t0) / 1000,
        intact:
          clean &&
          tc.every((c) => c.eof === true) &&
          bytes === sent &&
          (!spec.hash || sorted(conns.map((c) => c.shaSent)) === sorted(tc.map((c) => c.shaIn))),
      };
      break;
    }
    case "down": {
      const bytes = conns.reduce((a, c) => a + num(c.received), 0);
      d = {
        bytes,
        seconds: (Math.max(...conns.map((c) => num(c.tLast))) - t0) / 1000,
        intact:
          clean &&
          conns.every((c) => c.eof === true) &&
          bytes === tc.reduce((a, c) => a + num(c.bytesOut), 0) &&
          (!spec.hash || sorted(conns.map((c) => c.shaRecv)) === sorted(tc.map((c) => c.shaOut))),
      };
      break;
    }
    case "echo": {
      const good = conns.filter((c) => c.intact === true).length;
      d = {
        bytes: conns.reduce((a, c) => a + num(c.received), 0),
        seconds: (num(done.tEnd) - t0) / 1000,
        intact: good === spec.conns && conns.length === spec.conns,
        sessions: { total: spec.conns, intact: good },
      };
      break;
    }
    default: {
      const never: never = dir;
      throw new Error(`unknown direction ${String(never)}`);
    }
  }
  if (firstError !== undefined) d.firstError = firstError;
  return d;
}

/** Stripe deaths from the client's "session … end … stripe-deaths N" lines. */
export function stripeDeaths(lines: readonly string[]): number {
  return lines.reduce((a, l) => a + Number(/stripe-deaths (\d+)/.exec(l)?.[1] ?? 0), 0);
}
