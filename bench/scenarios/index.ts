/**
 * The scenario registry: every scenario module, in the order the suite runs and reports them. Adding a
 * scenario is one module in this folder and one line here.
 */

import type { Scenario } from "../lib/types.ts";
import { attacks } from "./attacks.ts";
import { auth } from "./auth.ts";
import { caps } from "./caps.ts";
import { faults } from "./faults.ts";
import { firstreply } from "./firstreply.ts";
import { handshake } from "./handshake.ts";
import { nocap } from "./nocap.ts";
import { ops } from "./ops.ts";
import { sessions } from "./sessions.ts";
import { shortconn } from "./shortconn.ts";
import { socks } from "./socks.ts";
import { uneven } from "./uneven.ts";
import { windowed } from "./windowed.ts";

/** Every scenario, in run and report order. */
export const SCENARIOS: readonly Scenario[] = [caps, uneven, nocap, auth, sessions, faults, firstreply, handshake, windowed, ops, socks, shortconn, attacks];

/** The scenarios of `names`, in registry order. */
export function selected(names: readonly string[]): Scenario[] {
  return SCENARIOS.filter((s) => names.includes(s.name));
}
