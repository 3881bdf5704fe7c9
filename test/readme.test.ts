/**
 * The README's commands work as written after its two set-up commands: every tcp-striper command in a
 * shell block is a valid command line (it parses with the real option table: modes, flags, values and
 * ranges), none needs a global Bun, and the test command CI runs is still there verbatim.
 */

import { expect, test } from "bun:test";
import { parseArgs } from "../src/cli/args.ts";

const README = await Bun.file(new URL("../README.md", import.meta.url).pathname).text();
const CI = await Bun.file(new URL("../.ci/run", import.meta.url).pathname).text();

/** The lines of every ```sh block. */
function shellLines(md: string): string[] {
  const out: string[] = [];
  for (const m of md.matchAll(/```sh\n([\s\S]*?)```/g)) out.push(...m[1]!.split("\n").filter((l) => l.trim() !== ""));
  return out;
}

/** Every tcp-striper invocation in a line (dist/tcp-striper, the installed tcp-striper, or npm run demo --), as argv. */
function invocations(line: string): string[][] {
  const out: string[][] = [];
  const code = line.replace(/\s#.*$/, "");
  for (const part of code.split(/&&|\||;/)) {
    const words = part.trim().split(/\s+/);
    const at = words.findIndex((w) => w === "dist/tcp-striper" || w === "tcp-striper");
    if (at >= 0 && (at === 0 || words[at - 1] === "exec")) {
      // Quoted words (a rule like '*:443' is quoted against the shell's globbing) lose their quotes.
      const argv = words.slice(at + 1).map((w) => w.replace(/^'([^']*)'$/, "$1"));
      const redirect = argv.findIndex((w) => w.startsWith(">"));
      out.push(redirect >= 0 ? argv.slice(0, redirect) : argv);
    }
    if (words[0] === "npm" && words[1] === "run" && words[2] === "demo") out.push(["demo", ...words.slice(4)]);
  }
  return out;
}

test("the README still shows the test command CI runs, verbatim", () => {
  expect(README).toContain("```sh\nnpm install --no-audit --no-fund && npm test\n```");
  expect(CI).toContain("\nnpm install --no-audit --no-fund && npm test\n");
});

test("every tcp-striper command in the README's shell blocks is a valid command line", () => {
  const lines = shellLines(README);
  const all = lines.flatMap(invocations);
  // The examples cover the modes a reader runs (a guard against this test silently finding nothing).
  expect(new Set(all.map((a) => a[0])).size).toBeGreaterThanOrEqual(5);
  const failures: string[] = [];
  for (const argv of all) {
    try {
      parseArgs(argv);
    } catch (err) {
      failures.push(`tcp-striper ${argv.join(" ")}: ${(err as Error).message}`);
    }
  }
  expect(failures).toEqual([]);
});

test("no README command needs a global Bun or a path that only works inside some directory", () => {
  for (const line of shellLines(README)) {
    expect(line).not.toMatch(/(^|\s)(bun|bunx|npx bun)\s/);
  }
  // The set-up commands the README names come before the first use of the binary.
  const setup = README.indexOf("npm install --no-audit --no-fund\nnpm run build");
  expect(setup).toBeGreaterThan(0);
  expect(README.indexOf("\ndist/tcp-striper ")).toBeGreaterThan(setup);
});

test("`npm exec -- tcp-striper`, the README's way without building, runs from the checkout with no global Bun", async () => {
  const node = Bun.which("node");
  const npm = Bun.which("npm");
  expect(node).not.toBeNull();
  expect(npm).not.toBeNull();
  const dirs = [...new Set([node!, npm!].map((p) => p.slice(0, p.lastIndexOf("/"))))];
  const PATH = [...dirs, "/usr/bin", "/bin"].join(":");
  // The check means something only if no Bun is on that PATH.
  expect(Bun.which("bun", { PATH })).toBeNull();
  const root = new URL("..", import.meta.url).pathname;
  const p = Bun.spawn([npm!, "exec", "--", "tcp-striper", "--version"], { cwd: root, env: { PATH, HOME: process.env.HOME ?? "/tmp" }, stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  // (stderr is shown on failure only: npm may add notices of its own there.)
  expect({ code, err: code === 0 ? "" : err }).toEqual({ code: 0, err: "" });
  expect(out).toMatch(/^tcp-striper \d+\.\d+\.\d+ \(bun /);
});
