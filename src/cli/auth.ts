/**
 * How the proxies' command line turns into stripe authentication: `--no-auth`, or keys from
 * `--key-file PATH` or the STRIPER_KEY environment variable (src/secure/keys.ts). There is no `--key`:
 * a key on the command line would show in `ps`.
 */

import { UsageError } from "../errors.ts";
import { loadKeys } from "../secure/keys.ts";
import type { StripeAuth } from "../proxy/handshake.ts";

/** The command-line options that choose the authentication. */
export interface AuthFlags {
  keyFile?: string;
  noAuth?: boolean;
}

/** The authentication to run with, and warnings for the log (a key file others may read). */
export interface ResolvedAuth {
  auth: StripeAuth;
  warnings: string[];
}

/**
 * Resolves the authentication: plain with `--no-auth`, else the keys of `--key-file` or STRIPER_KEY in
 * `env`. Throws UsageError when both `--no-auth` and `--key-file` are given, and KeyError (a one-line
 * message; exit 2) when no key can be loaded — without any, the message says how to make one.
 */
export function resolveAuth(flags: AuthFlags, env: Record<string, string | undefined>): ResolvedAuth {
  if (flags.noAuth) {
    if (flags.keyFile !== undefined) throw new UsageError("--no-auth and --key-file exclude each other");
    return { auth: { mode: "plain" }, warnings: [] };
  }
  const loaded = loadKeys({ keyFile: flags.keyFile, env });
  return { auth: { mode: "keyed", keys: loaded.keys }, warnings: loaded.warnings };
}
