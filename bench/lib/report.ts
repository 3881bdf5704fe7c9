/**
 * The report writer: markdown (header, table, how each figure is measured), JSON and SVG charts, made
 * from the metadata, the judged rows and the runs alone (pure), plus `writeFiles` for the one I/O step.
 * A --quick run writes quick.md, quick.json and quick-*.svg so a CI smoke never overwrites a full run.
 */

import { renameSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fmt } from "./stats.ts";
import type { Meta, ReportCtx, Results, Row, RunSpec, Scenario } from "./types.ts";

/** "5 min 59 s" or "42 s". */
export function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function valueCell(r: Row): string {
  if (r.text) return r.text;
  return r.value.median === null ? "failed" : `${fmt(r.value.median)} ${r.unit}`.trim();
}

function rangeCell(r: Row): string {
  if (r.text || r.value.min === null || r.value.max === null) return "";
  return `${fmt(r.value.min)}–${fmt(r.value.max)}`;
}

/** The results table in markdown. */
export function markdownTable(rows: readonly Row[]): string {
  const lines = [
    "| Scenario | Case | Median | Min–max | Runs | Reference | Ratio | Target | Result | Notes |",
    "|---|---|---:|---:|---:|---|---:|---|---|---|",
  ];
  for (const r of rows) {
    const result = r.pass === null ? "" : r.pass ? "pass" : "**FAIL**";
    lines.push(
      `| ${r.scenario} | ${r.case} | ${valueCell(r)} | ${rangeCell(r)} | ${r.runs} | ${r.reference} | ${r.ratio === null ? "" : r.ratio.toFixed(2)} | ${r.target} | ${result} | ${r.note.replace(/\|/g, "/")} |`,
    );
  }
  return lines.join("\n");
}

/** The header paragraph: when, what code, which machine, how many runs. */
export function markdownHead(m: Meta): string {
  const o = m.options;
  return (
    `# tcp-striper end-to-end benchmark\n\n` +
    `${m.date} · commit ${m.commit ?? "?"}${m.srcUncommittedChanges ? " + uncommitted changes in src/" : ""} (src/ sha256 ${m.srcSha256}…, run from a snapshot) · Bun ${m.bun} · ` +
    `${m.cpus} CPUs (load ${m.loadavgStart.toFixed(1)} → ${m.loadavgEnd.toFixed(1)}) · ${o.runs} run(s) per figure` +
    `${o.runs > 1 ? " (median, min–max)" : ""}${o.quick ? " · --quick" : ""} · link cap ${o.capMBps} MB/s per connection, ` +
    `${o.delayMs} ms one-way · took ${duration(m.durationSeconds * 1000)}\n`
  );
}

/** "How each figure is measured": the shared definitions, then one bullet per scenario run. */
export function markdownNotes(m: Meta, scenarios: readonly Scenario[]): string {
  const c = { o: m.options, T: m.transferSeconds, cpus: m.cpus };
  return [
    "",
    "How each figure is measured:",
    "- Every component is its own process on loopback (target, link or fault proxy, server proxy, client proxy, app), started fresh for every run on ports from a free-port probe.",
    "- Throughput = payload bytes / (app starts connecting → last byte at the receiver). MB = 10^6 B, GB = 10^9 B, MiB/GiB = 2^20/2^30 B.",
    ...scenarios.map((s) => s.measures(c)),
    "- Result: pass/FAIL against the target ratio where one exists; a run that timed out, crashed or delivered different bytes fails its row.",
    ...(m.options.quick
      ? ["- --quick is a smoke test: 1 run of ~1 s per figure, so connection set-up and rate probing weigh ~10% and the ratios are indicative only. Full results: `bun run bench` (bench/results/latest.md)."]
      : []),
  ].join("\n");
}

/** The whole markdown report. */
export function markdown(m: Meta, rows: readonly Row[], scenarios: readonly Scenario[]): string {
  return `${markdownHead(m)}\n${markdownTable(rows)}\n${markdownNotes(m, scenarios)}\n`;
}

/** The subtitle of every chart. */
export function chartSubtitle(m: Meta): string {
  const o = m.options;
  return `${m.date.slice(0, 16).replace("T", " ")} · commit ${m.commit ?? "?"} · ${o.runs} run(s)${o.runs > 1 ? ", median" : ""}${o.quick ? " · quick" : ""}`;
}

/** A file of the report: name inside bench/results, and its text. */
export interface ReportFile {
  name: string;
  text: string;
}

/** Every file of the report, in the order they are listed: markdown, JSON, then each scenario's charts. */
export function reportFiles(
  m: Meta,
  rows: readonly Row[],
  specs: readonly RunSpec[],
  results: Results,
  scenarios: readonly Scenario[],
): ReportFile[] {
  const base = m.options.quick ? "quick" : "latest";
  const ctx: ReportCtx = { o: m.options, T: m.transferSeconds, cpus: m.cpus, results };
  const sub = chartSubtitle(m);
  const json = { meta: m, rows, runs: specs.map((s) => ({ spec: s, results: results.get(s.key) })) };
  return [
    { name: `${base}.md`, text: markdown(m, rows, scenarios) },
    { name: `${base}.json`, text: `${JSON.stringify(json, null, 2)}\n` },
    ...scenarios.flatMap((s) => s.charts?.(ctx, sub) ?? []).map((c) => ({ name: m.options.quick ? `quick-${c.name}` : c.name, text: c.svg })),
  ];
}

/** Writes each file atomically (temp file, then rename) into `dir`. */
export function writeFiles(dir: string, files: readonly ReportFile[]): void {
  for (const f of files) {
    const path = resolve(dir, f.name);
    writeFileSync(`${path}.tmp`, f.text);
    renameSync(`${path}.tmp`, path);
  }
}
