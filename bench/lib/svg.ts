/**
 * Hand-written SVG charts for the end-to-end results (no dependencies): throughput against stripe
 * count over the capped link, and bars for the uncapped runs. Whiskers show min–max over the runs.
 */

import type { Summary } from "./stats.ts";

const FONT = `font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"`;
const UP = "#1f77b4";
const DOWN = "#e6761b";
const IDEAL = "#555";

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** A "nice" axis maximum and step (1, 2, 2.5 or 5 × 10^k) with about `ticks` steps. */
function niceAxis(max: number, ticks = 6): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.2 };
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw)!;
  return { top: Math.ceil(max / step) * step, step };
}

function num(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(Math.abs(x) < 1 ? 2 : 1);
}

/** Data of the capped-link chart, in MB/s. */
export interface CapsChart {
  title: string;
  subtitle: string;
  capMBps: number;
  stripes: number[];
  up: (Summary | undefined)[];
  down: (Summary | undefined)[];
  directUp?: Summary;
  directDown?: Summary;
}

/** Throughput vs stripe count: upload, download, the ideal N × cap line and the direct baselines. */
export function capsSvg(c: CapsChart): string {
  const W = 760;
  const H = 460;
  const L = 64;
  const R = 200;
  const T = 62;
  const B = 56;
  const pw = W - L - R;
  const ph = H - T - B;
  const ns = c.stripes;
  const lmin = Math.log2(Math.min(...ns));
  const lmax = Math.log2(Math.max(...ns));
  const x = (n: number): number => (lmax === lmin ? L + pw / 2 : L + 20 + ((Math.log2(n) - lmin) / (lmax - lmin)) * (pw - 40));
  const values = [
    ...ns.map((n) => n * c.capMBps),
    ...[...c.up, ...c.down, c.directUp, c.directDown].map((s) => s?.max ?? 0),
  ];
  const { top, step } = niceAxis(Math.max(...values) * 1.05);
  const y = (v: number): number => T + ph - (v / top) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${L}" y="24" font-size="15" font-weight="600">${esc(c.title)}</text>`);
  out.push(`<text x="${L}" y="42" fill="#555">${esc(c.subtitle)}</text>`);
  for (let v = 0; v <= top + 1e-9; v += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${L - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#333">${num(v)}</text>`);
  }
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/>`);
  for (const n of ns) {
    out.push(`<line x1="${x(n).toFixed(1)}" x2="${x(n).toFixed(1)}" y1="${T + ph}" y2="${T + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${x(n).toFixed(1)}" y="${T + ph + 19}" text-anchor="middle">${n}</text>`);
  }
  out.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle" fill="#333">stripes (N), log scale</text>`);
  out.push(
    `<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">throughput, MB/s (10^6 B/s)</text>`,
  );
  // Ideal N × cap.
  const idealPts = ns.map((n) => `${x(n).toFixed(1)},${y(n * c.capMBps).toFixed(1)}`).join(" ");
  out.push(`<polyline points="${idealPts}" fill="none" stroke="${IDEAL}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  // Direct baselines.
  const base = (s: Summary | undefined, color: string): void => {
    if (s?.median == null) return;
    out.push(
      `<line x1="${L}" x2="${L + pw}" y1="${y(s.median).toFixed(1)}" y2="${y(s.median).toFixed(1)}" stroke="${color}" stroke-width="1.2" stroke-dasharray="2 3"/>`,
    );
  };
  base(c.directUp, UP);
  base(c.directDown, DOWN);
  const series = (ss: (Summary | undefined)[], color: string, dx: number): void => {
    const pts: string[] = [];
    ns.forEach((n, i) => {
      const s = ss[i];
      if (s?.median == null) return;
      const cx = x(n) + dx;
      pts.push(`${cx.toFixed(1)},${y(s.median).toFixed(1)}`);
      if (s.min != null && s.max != null && s.max > s.min) {
        out.push(`<line x1="${cx.toFixed(1)}" x2="${cx.toFixed(1)}" y1="${y(s.min).toFixed(1)}" y2="${y(s.max).toFixed(1)}" stroke="${color}"/>`);
        for (const v of [s.min, s.max]) {
          out.push(`<line x1="${(cx - 4).toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="${color}"/>`);
        }
      }
      out.push(`<circle cx="${cx.toFixed(1)}" cy="${y(s.median).toFixed(1)}" r="3.5" fill="${color}"/>`);
    });
    if (pts.length > 1) out.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
  };
  series(c.up, UP, -4);
  series(c.down, DOWN, 4);
  // Legend.
  const lx = L + pw + 20;
  let ly = T + 8;
  const legend = (draw: string, label: string): void => {
    out.push(draw.replaceAll("LY", String(ly)));
    out.push(`<text x="${lx + 34}" y="${ly + 4}">${esc(label)}</text>`);
    ly += 22;
  };
  legend(`<line x1="${lx}" x2="${lx + 26}" y1="LY" y2="LY" stroke="${UP}" stroke-width="2"/><circle cx="${lx + 13}" cy="LY" r="3.5" fill="${UP}"/>`, "upload, striped");
  legend(`<line x1="${lx}" x2="${lx + 26}" y1="LY" y2="LY" stroke="${DOWN}" stroke-width="2"/><circle cx="${lx + 13}" cy="LY" r="3.5" fill="${DOWN}"/>`, "download, striped");
  legend(`<line x1="${lx}" x2="${lx + 26}" y1="LY" y2="LY" stroke="${IDEAL}" stroke-width="1.5" stroke-dasharray="6 4"/>`, `ideal N × ${num(c.capMBps)} MB/s`);
  if (c.directUp?.median != null) {
    legend(`<line x1="${lx}" x2="${lx + 26}" y1="LY" y2="LY" stroke="${UP}" stroke-dasharray="2 3"/>`, `direct up ${c.directUp.median.toFixed(2)}`);
  }
  if (c.directDown?.median != null) {
    legend(`<line x1="${lx}" x2="${lx + 26}" y1="LY" y2="LY" stroke="${DOWN}" stroke-dasharray="2 3"/>`, `direct down ${c.directDown.median.toFixed(2)}`);
  }
  out.push(`<text x="${lx}" y="${ly + 8}" fill="#666" font-size="11">dots: median of the runs</text>`);
  out.push(`<text x="${lx}" y="${ly + 22}" fill="#666" font-size="11">whiskers: min–max</text>`);
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}

/** One bar of the uncapped chart. */
export interface Bar {
  label: string;
  /** GB/s. */
  value: Summary | undefined;
  /** Shown under the label (e.g. CPU seconds per GiB). */
  note?: string;
}

/** Bars (median, whiskers min–max) for the uncapped runs. */
export function barsSvg(title: string, subtitle: string, unit: string, bars: Bar[]): string {
  const W = 760;
  const H = 440;
  const L = 64;
  const R = 24;
  const T = 62;
  const B = 84;
  const pw = W - L - R;
  const ph = H - T - B;
  const { top, step } = niceAxis(Math.max(0, ...bars.map((b) => b.value?.max ?? 0)) * 1.1);
  const y = (v: number): number => T + ph - (v / top) * ph;
  const slot = pw / Math.max(1, bars.length);
  const bw = Math.min(80, slot * 0.55);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${L}" y="24" font-size="15" font-weight="600">${esc(title)}</text>`);
  out.push(`<text x="${L}" y="42" fill="#555">${esc(subtitle)}</text>`);
  for (let v = 0; v <= top + 1e-9; v += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${L - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#333">${num(v)}</text>`);
  }
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">${esc(unit)}</text>`);
  bars.forEach((b, i) => {
    const cx = L + slot * (i + 0.5);
    const s = b.value;
    if (s?.median != null) {
      out.push(
        `<rect x="${(cx - bw / 2).toFixed(1)}" y="${y(s.median).toFixed(1)}" width="${bw.toFixed(1)}" height="${(T + ph - y(s.median)).toFixed(1)}" fill="${i === 0 ? "#8c8c8c" : i === 1 ? "#9ecae1" : UP}"/>`,
      );
      if (s.min != null && s.max != null && s.max > s.min) {
        out.push(`<line x1="${cx.toFixed(1)}" x2="${cx.toFixed(1)}" y1="${y(s.min).toFixed(1)}" y2="${y(s.max).toFixed(1)}" stroke="#222"/>`);
        for (const v of [s.min, s.max]) {
          out.push(`<line x1="${(cx - 6).toFixed(1)}" x2="${(cx + 6).toFixed(1)}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#222"/>`);
        }
      }
      out.push(`<text x="${cx.toFixed(1)}" y="${(y(s.max ?? s.median) - 6).toFixed(1)}" text-anchor="middle" font-weight="600">${s.median.toFixed(2)}</text>`);
    } else {
      out.push(`<text x="${cx.toFixed(1)}" y="${(T + ph - 6).toFixed(1)}" text-anchor="middle" fill="#b00">failed</text>`);
    }
    out.push(`<text x="${cx.toFixed(1)}" y="${T + ph + 18}" text-anchor="middle">${esc(b.label)}</text>`);
    if (b.note) {
      b.note.split("\n").forEach((line, k) => {
        out.push(`<text x="${cx.toFixed(1)}" y="${T + ph + 34 + k * 14}" text-anchor="middle" fill="#555" font-size="11">${esc(line)}</text>`);
      });
    }
  });
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}
