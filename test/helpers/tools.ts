/**
 * External tools the suite runs for real: promtool (Debian package prometheus), chromium,
 * systemd-analyze (package systemd), curl (test/helpers/socks.ts) and haproxy. .ci/run installs whichever is missing; a test that needs one
 * fails with the package to install rather than skipping.
 */

/** The path of `name`, or an error naming the Debian package that provides it. */
export function tool(name: string, pkg: string): string {
  // Also the sbin directories, where Debian puts haproxy: a user's PATH often leaves them out.
  const bin = Bun.which(name, { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin` });
  if (!bin) throw new Error(`${name} not found: install the Debian package ${pkg} (.ci/run does)`);
  return bin;
}

/** Runs `promtool check metrics` on `text`; returns its exit code and everything it printed. */
export async function promtool(text: string): Promise<{ code: number; output: string }> {
  const p = Bun.spawn([tool("promtool", "prometheus"), "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code, output: (out + err).trim() };
}
