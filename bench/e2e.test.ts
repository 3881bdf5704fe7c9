/**
 * The benchmark suite's pure parts, checked against the committed run (bench/results/latest.*): every
 * selected scenario plans the runs recorded there, the judge re-derives every row from the raw runs,
 * and the report writer reproduces the markdown and the charts byte for byte. Plus the flag parsing and the
 * process plans. No process is started and nothing is timed.
 */

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { appProc, planChain } from "./lib/chain.ts";
import { BenchUsageError, parseFlags } from "./lib/flags.ts";
import { judge, judgeAll } from "./lib/judge.ts";
import { deliver } from "./lib/measure.ts";
import { parseOptions, usage } from "./lib/options.ts";
import { markdown, markdownTable, reportFiles } from "./lib/report.ts";
import { fmt } from "./lib/stats.ts";
import type { Figure, Meta, Results, Row, RunResult, RunSpec } from "./lib/types.ts";
import { caps } from "./scenarios/caps.ts";
import { SCENARIOS, selected } from "./scenarios/index.ts";

const RESULTS = resolve(import.meta.dir, "results");
const committed = JSON.parse(readFileSync(resolve(RESULTS, "latest.json"), "utf8")) as {
  meta: Meta;
  rows: Row[];
  runs: { spec: RunSpec; results: RunResult[] }[];
};
const latestMd = readFileSync(resolve(RESULTS, "latest.md"), "utf8");
const meta = committed.meta;
const o = meta.options;
const T = meta.transferSeconds;
const scenarios = selected(o.scenarios);

function resultsOf(runs: typeof committed.runs): Results {
  return new Map(runs.map((r) => [r.spec.key, r.results]));
}

/** Rows of the whole table, judged from `results`. */
function rowsFrom(results: Results): Row[] {
  return judgeAll(scenarios.flatMap((s) => s.figures({ o, T, cpus: meta.cpus, results })));
}

/** The cells of latest.md's table rows (header and rule left out). */
function mdCells(): string[][] {
  return latestMd
    .split("\n")
    .filter((l) => l.startsWith("| ") && !l.startsWith("| Scenario"))
    .map((l) => l.slice(2, -2).split(" | "));
}

// These hold for whatever run is committed (full or some scenarios), as long as bench/results comes
// from the suite's current code: change a scenario's runs, figures or notes and re-run `bun run bench`.
describe("against the committed run in bench/results", () => {
  test("each selected scenario plans exactly the runs recorded in latest.json", () => {
    expect(scenarios.flatMap((s) => s.runs({ o, T }))).toEqual(committed.runs.map((r) => r.spec));
  });

  test("the judge re-derives every row of latest.json from the raw runs", () => {
    expect(rowsFrom(resultsOf(committed.runs))).toEqual(committed.rows);
  });

  test("its figures, ratios and verdicts are the ones latest.md shows", () => {
    const rows = rowsFrom(resultsOf(committed.runs));
    const cells = mdCells();
    expect(cells.map((c) => [c[0], c[1]])).toEqual(rows.map((r) => [r.scenario, r.case]));
    // Median, ratio and result columns.
    expect(cells.map((c) => [c[2], c[6], c[8]])).toEqual(
      rows.map((r) => [
        r.text ?? (r.value.median === null ? "failed" : `${fmt(r.value.median)} ${r.unit}`.trim()),
        r.ratio === null ? "" : r.ratio.toFixed(2),
        r.pass === null ? "" : r.pass ? "pass" : "**FAIL**",
      ]),
    );
    // Something is judged: a table of verdict-free rows would pass the above vacuously.
    expect(rows.some((r) => r.pass !== null)).toBe(true);
  });

  test("the report writer reproduces latest.md byte for byte", () => {
    expect(markdown(meta, rowsFrom(resultsOf(committed.runs)), scenarios)).toBe(latestMd);
  });

  test("the report writer reproduces the committed charts and latest.json", () => {
    const results = resultsOf(committed.runs);
    const files = reportFiles(meta, rowsFrom(results), committed.runs.map((r) => r.spec), results, scenarios);
    expect(files.slice(0, 2).map((f) => f.name)).toEqual(["latest.md", "latest.json"]);
    expect(JSON.parse(files[1]!.text)).toEqual(committed);
    const charts = files.slice(2);
    expect(charts.length).toBe(scenarios.filter((s) => s.charts).length);
    for (const c of charts) expect(c.text).toBe(readFileSync(resolve(RESULTS, c.name), "utf8"));
  });

  test("a quick run names its files quick*, so it never overwrites a full run", () => {
    const quickMeta: Meta = { ...meta, options: { ...o, quick: true } };
    const results = resultsOf(committed.runs);
    const names = reportFiles(quickMeta, rowsFrom(results), [], results, SCENARIOS).map((f) => f.name);
    expect(names).toEqual(["quick.md", "quick.json", "quick-caps.svg", "quick-nocap.svg"]);
  });
});

describe("judge", () => {
  test("a failed run fails its rows and says why, even where the target is met", () => {
    const good = (run: number, mbps: number): RunResult => ({ run, ok: true, bytes: mbps * 4e6, seconds: 4, rate: mbps * 1e6, intact: true, cpu: {}, rss: {} });
    const failed: RunResult = { run: 1, ok: false, error: "timed out after 38 s", bytes: 0, seconds: 0, rate: 0, intact: false, cpu: {}, rss: {} };
    const o8 = { ...parseOptions([], SCENARIOS), stripes: [8] };
    const figures = (runs: RunResult[]) => caps.figures({ o: o8, T: 4, cpus: 2, results: new Map([["caps/up/N8", runs]]) });
    const healthy = judge(figures([good(1, 31.4), good(2, 31.3), good(3, 31.5)])[1]!);
    expect([healthy.pass, healthy.runs, healthy.note]).toEqual([true, "3", ""]);
    const row = judge(figures([failed, good(2, 31.3), good(3, 31.5)])[1]!);
    expect(row.case).toBe("upload: pair, N=8");
    expect(row.pass).toBe(false);
    expect(row.runs).toBe("2/3");
    expect(row.note).toBe("1 run(s) failed: timed out after 38 s");
    // The median is over the good runs only.
    expect(row.value).toEqual({ median: 31.4, min: 31.3, max: 31.5, n: 2 });
    expect(markdownTable([row])).toContain("| 31.4 MB/s | 31.3–31.5 | 2/3 | N×cap 32.0 MB/s | 0.98 | ≥ 0.90 | **FAIL** | 1 run(s) failed: timed out after 38 s |");
  });

  test("a figure below its ratio misses; at the ratio it meets it", () => {
    const f = (median: number): Figure => ({
      scenario: "x",
      case: "y",
      unit: "MB/s",
      value: { median, min: median, max: median, n: 3 },
      tally: { total: 3, ok: 3, errors: [] },
      reference: { label: "N×cap", value: 32 },
      target: { kind: "ratio", min: 0.9 },
      note: "",
    });
    expect(judge(f(28.7)).pass).toBe(false);
    expect(judge(f(28.8)).pass).toBe(true);
    expect(judge(f(28.8)).ratio).toBeCloseTo(0.9, 12);
    expect(judge(f(28.8)).target).toBe("≥ 0.90");
  });

  test("a worst-run limit looks at the worst run, not the median", () => {
    const f: Figure = {
      scenario: "sessions",
      case: "rss",
      unit: "MB",
      value: { median: 150, min: 140, max: 201, n: 3 },
      tally: { total: 3, ok: 3, errors: [] },
      target: { kind: "max", below: 200, text: "< 200 MB (worst run)" },
      note: "",
    };
    expect(judge(f).pass).toBe(false);
    expect(judge({ ...f, value: { ...f.value, max: 199 } }).pass).toBe(true);
  });

  test("a median limit looks at the median, not the worst run", () => {
    const f: Figure = {
      scenario: "windowed",
      case: "round trip",
      unit: "ms",
      value: { median: 34.8, min: 33, max: 69.3, n: 3 },
      tally: { total: 3, ok: 3, errors: [] },
      target: { kind: "median", below: 37.1, text: "< base + 15 ms" },
      note: "",
    };
    expect(judge(f).pass).toBe(true);
    expect(judge({ ...f, value: { ...f.value, median: 37.1 } }).pass).toBe(false);
    expect(judge(f).target).toBe("< base + 15 ms");
  });

  test("no runs at all is a failure, not a missing verdict", () => {
    const row = judge({ scenario: "x", case: "y", unit: "s", value: { median: null, min: null, max: null, n: 0 }, tally: { total: 0, ok: 0, errors: [] }, note: "" });
    expect(row.pass).toBe(false);
    expect(markdownTable([row])).toContain("| failed |");
  });
});

describe("transfer accounting", () => {
  const spec = { dir: "up" as const, conns: 1, hash: true };
  const done = { t0: 1000, conns: [{ sent: 100, shaSent: "a", error: null }] };

  test("upload: bytes the target received over app start → target's last byte", () => {
    const d = deliver(spec, done, [{ bytesIn: 100, tLast: 3000, eof: true, shaIn: "a", error: null }]);
    expect(d).toEqual({ bytes: 100, seconds: 2, intact: true });
  });

  test("a different hash or a missing EOF is not intact", () => {
    expect(deliver(spec, done, [{ bytesIn: 100, tLast: 3000, eof: true, shaIn: "b", error: null }]).intact).toBe(false);
    expect(deliver(spec, done, [{ bytesIn: 100, tLast: 3000, eof: false, shaIn: "a", error: null }]).intact).toBe(false);
  });
});

describe("options", () => {
  const parse = (...argv: string[]) => parseOptions(argv, SCENARIOS);

  test("defaults: every scenario, 3 runs, 4 MB/s, 10 ms, stripes 1..16", () => {
    expect(parse()).toEqual({ quick: false, runs: 3, capMBps: 4, delayMs: 10, stripes: [1, 2, 4, 8, 16], scenarios: ["caps", "uneven", "nocap", "auth", "sessions", "faults", "firstreply", "handshake", "windowed", "ops", "socks", "shortconn", "attacks"] });
  });

  test("--quick means one run unless --runs says otherwise", () => {
    expect(parse("--quick").runs).toBe(1);
    expect(parse("--quick", "--runs", "2").runs).toBe(2);
  });

  test("--scenario is repeatable and takes comma lists; the order is the registry's", () => {
    expect(parse("--scenario", "faults", "--scenario=caps,uneven", "--scenario", "caps").scenarios).toEqual(["caps", "uneven", "faults"]);
  });

  test("--stripes: a deduplicated, sorted list of whole numbers; --cap=2 form works", () => {
    const p = parse("--stripes", "8,1,8,4", "--cap=2", "--delay", "20");
    expect(p.stripes).toEqual([1, 4, 8]);
    expect(p.capMBps).toBe(2);
    expect(p.delayMs).toBe(20);
  });

  test.each([
    [["--runs", "0"], '--runs wants a number in [1, 50], got "0"'],
    [["--cap", "fast"], '--cap wants a number in [0.01, 10000], got "fast"'],
    [["--stripes", "1,2.5"], '--stripes wants whole numbers, got "2.5"'],
    [["--stripes", "1,65"], '--stripes wants a number in [1, 64], got "65"'],
    [["--scenario", "bogus"], '--scenario: expected one of caps, uneven, nocap, auth, sessions, faults, firstreply, handshake, windowed, ops, socks, shortconn, attacks, got "bogus"'],
    [["--runs"], "--runs needs a value (K)"],
    [["--runs", "--quick"], "--runs needs a value (K)"],
    [["--runs", "2", "--runs", "3"], "--runs given twice"],
    [["--quick=1"], "--quick takes no value"],
    [["--turbo"], 'unknown argument "--turbo"'],
    [["quick"], 'unknown argument "quick"'],
  ])("%p is a usage error: %s", (argv, message) => {
    expect(() => parse(...argv)).toThrow(new BenchUsageError(message));
  });

  test("a scenario's own flag lands in Options.extra and shows in --help", () => {
    const extra = { ...SCENARIOS[0]!, name: "windowed", flags: [{ name: "window", kind: "number" as const, arg: "BYTES", help: "app window", min: 1, max: 1 << 30 }] };
    const all = [...SCENARIOS, extra];
    expect(parseOptions(["--window", "2097152"], all).extra).toEqual({ window: 2097152 });
    expect(parseOptions([], all).extra).toBeUndefined();
    expect(usage(all)).toContain("--window BYTES");
    expect(() => parseOptions([], [...all, extra])).toThrow(BenchUsageError);
  });

  test("parseFlags returns only what was given", () => {
    expect([...parseFlags(["--a", "1"], [{ name: "a", kind: "string", arg: "X", help: "" }, { name: "b", kind: "bool", help: "" }])]).toEqual([["a", "1"]]);
  });
});

describe("process plans", () => {
  const pair: RunSpec = {
    key: "k",
    scenario: "x",
    label: "l",
    dir: "up",
    path: "pair",
    mid: "link",
    rates: [4, 0.4],
    delayMs: 10,
    stripes: 8,
    bytes: 1000,
    conns: 1,
    hash: true,
    deadlineMs: 8000,
    timeoutMs: 38000,
  };
  const ports = [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008];

  test("the pair through a link: target ← server ← link ← client, the app enters at the client", () => {
    const p = planChain(pair, ports);
    expect(p.entry).toBe(1004);
    expect(p.procs.map((x) => [x.name, x.argv.join(" ")])).toEqual([
      ["target", "bench/tools/target.ts --port 1001 --hash 1 --seed 1 --mode sink"],
      ["server", "src/main.ts server --listen 127.0.0.1:1003 --target 127.0.0.1:1001 --key-file bench.key --workers 1"],
      ["link", "src/main.ts link --listen 127.0.0.1:1002 --target 127.0.0.1:1003 --rate 4,0.4 --delay 10"],
      ["client", "src/main.ts client --listen 127.0.0.1:1004 --peer 127.0.0.1:1002 --stripes 8 --key-file bench.key"],
    ]);
  });

  test("extra arguments per role and a custom app tool go where they belong", () => {
    const spec: RunSpec = {
      ...pair,
      mid: "none",
      args: { server: ["--no-auth"], client: ["--no-auth", "--stripes-extra", "1"], app: ["--window", "2097152"] },
      tools: { app: "bench/tools/windowed-app.ts" },
    };
    const p = planChain(spec, ports);
    expect(p.procs.find((x) => x.name === "server")!.argv.slice(-1)).toEqual(["--no-auth"]);
    expect(p.procs.find((x) => x.name === "server")!.argv).not.toContain("--key-file"); // --no-auth replaces the key
    expect(p.procs.find((x) => x.name === "client")!.argv.slice(-3)).toEqual(["--no-auth", "--stripes-extra", "1"]);
    expect(p.procs.find((x) => x.name === "client")!.argv).toContain("127.0.0.1:1003"); // no mid: straight to the server
    const app = appProc(spec, p.entry);
    expect(app.argv[0]).toBe("bench/tools/windowed-app.ts");
    expect(app.argv.slice(-2)).toEqual(["--window", "2097152"]);
  });

  test("download: the target is the source and is told how much to send", () => {
    const p = planChain({ ...pair, path: "direct", dir: "down" }, ports);
    expect(p.entry).toBe(1001);
    expect(p.procs.map((x) => x.argv.join(" "))).toEqual(["bench/tools/target.ts --port 1001 --hash 1 --seed 1 --mode source --bytes 1000 --deadline-ms 8000"]);
  });
});
