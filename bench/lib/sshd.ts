/**
 * The sshd configuration the windowed benchmarks run scp against (bench/scenarios/windowed.ts and the
 * standalone driver bench/tools/windowed-run.ts): keys only, no PAM or DNS, listening on loopback.
 */

import { join } from "node:path";

/** sshd_config text for a daemon on 127.0.0.1:`port` whose host key and authorized_keys are in `dir`. */
export function sshdConfigText(dir: string, port: number, pidFile: string): string {
  return [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${join(dir, "host")}`,
    `PidFile ${pidFile}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "PermitRootLogin prohibit-password",
    "StrictModes no",
    "UseDNS no",
    "Subsystem sftp internal-sftp",
    "",
  ].join("\n");
}
