import { clock, usd, when } from "./format";

export interface Point {
  t: number;
  usd: number;
}

/** A call marked on the line: a replay (its stored answer, no charge), or an observe-mode key's would-be refusal. */
export interface Mark {
  t: number;
  kind: "replay" | "would_deny";
}

const MARK_TEXT: Record<Mark["kind"], string> = { replay: "replayed, no charge", would_deny: "over a limit, forwarded (observe)" };

// Drawn 1000 units wide: at 1:1 on a wide screen, about 3/4 at 800 px (the text stays readable).
const W = 1000;
const H = 260;
const PAD = { left: 76, right: 20, top: 16, bottom: 34 };

/** Round steps for an axis up to `max`: 1, 2 or 5 times a power of ten. */
function ticks(max: number, count = 4): number[] {
  if (max <= 0) return [0];
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v <= max + step / 2; v += step) out.push(v);
  return out;
}

/**
 * Cumulative spend over time, hand-drawn in SVG (no library, nothing fetched): a step line of what the key's
 * calls cost; its caps as dashed lines (the lifetime cap, and the daily cap while the chart stays within one UTC
 * day, where the line is that day's spend); replays and observed refusals as marks on the line.
 */
export function SpendChart({
  points,
  marks = [],
  cap,
  dailyCap = null,
  until,
  title,
}: {
  points: Point[];
  marks?: Mark[];
  cap: number | null;
  dailyCap?: number | null;
  until: number;
  title: string;
}) {
  if (points.length === 0) return <p class="muted">No spend yet: the chart appears with the first priced call.</p>;
  const sorted = [...points].sort((a, b) => a.t - b.t);
  let total = 0;
  const cumulative: Point[] = [];
  for (const p of sorted) {
    total += p.usd;
    cumulative.push({ t: p.t, usd: total });
  }
  const t0 = cumulative[0]!.t;
  // Up to now: a flat line since the last call says the key has been quiet.
  const t1 = Math.max(cumulative[cumulative.length - 1]!.t, until, t0 + 60_000);
  const sameDay = new Date(t0).toISOString().slice(0, 10) === new Date(t1).toISOString().slice(0, 10);
  const caps = [
    ...(cap !== null ? [{ usd: cap, name: "lifetime cap" }] : []),
    ...(dailyCap !== null && sameDay ? [{ usd: dailyCap, name: "daily cap" }] : []),
  ];
  const top = Math.max(total, ...caps.map((c) => c.usd)) * 1.1 || 1;
  const yTicks = ticks(top);
  const yMax = yTicks[yTicks.length - 1]!;
  const x = (t: number) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  let path = `M ${x(t0).toFixed(1)} ${y(0).toFixed(1)}`;
  for (const p of cumulative) path += ` H ${x(p.t).toFixed(1)} V ${y(p.usd).toFixed(1)}`;
  path += ` H ${x(t1).toFixed(1)}`;
  const area = `${path} V ${y(0).toFixed(1)} Z`;
  // Seconds when the calls span less than 10 minutes, so the three labels differ.
  const label = (t: number) =>
    !sameDay ? when(new Date(t).toISOString()).slice(5, 16) : t1 - t0 < 600_000 ? clock(t).slice(0, 8) : clock(t).slice(0, 5);
  /** The cumulative spend at `t`: where a mark sits on the line. */
  const at = (t: number) => cumulative.reduce((v, p) => (p.t <= t ? p.usd : v), 0);
  const shownMarks = marks.filter((m) => m.t >= t0 && m.t <= t1);
  const counted = (kind: Mark["kind"]) => shownMarks.filter((m) => m.kind === kind).length;
  const summary = `${title}: ${usd(total)} in ${sorted.length} priced calls, from ${when(new Date(t0).toISOString())} to ${when(
    new Date(t1).toISOString(),
  )}${caps.map((c) => `; ${c.name} ${usd(c.usd)}`).join("")}${counted("replay") ? `; ${counted("replay")} replayed` : ""}${
    counted("would_deny") ? `; ${counted("would_deny")} over a limit, forwarded (observe)` : ""
  }.`;
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary}>
      <title>{summary}</title>
      {yTicks.map((v) => (
        <g key={v}>
          <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} />
          <text x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
            {usd(v)}
          </text>
        </g>
      ))}
      <line class="axis" x1={PAD.left} x2={W - PAD.right} y1={y(0)} y2={y(0)} />
      {[t0, (t0 + t1) / 2, t1].map((t, i) => (
        <text key={t} x={x(t)} y={H - 10} text-anchor={i === 0 ? "start" : i === 2 ? "end" : "middle"}>
          {label(t)}
        </text>
      ))}
      {caps.map((c) => (
        <g key={c.name}>
          <line class="cap" x1={PAD.left} x2={W - PAD.right} y1={y(c.usd)} y2={y(c.usd)} />
          <text x={W - PAD.right} y={y(c.usd) - 5} text-anchor="end">
            {c.name} {usd(c.usd)}
          </text>
        </g>
      ))}
      <path class="area" d={area} />
      <path class="line" d={path} />
      {cumulative.map((p) => (
        <circle key={`${p.t}-${p.usd}`} class="dot" cx={x(p.t)} cy={y(p.usd)} r={3.5} />
      ))}
      {shownMarks.map((m) => (
        <circle key={`${m.kind}-${m.t}`} class={`mark ${m.kind}`} cx={x(m.t)} cy={y(at(m.t))} r={6}>
          <title>
            {clock(m.t)}: {MARK_TEXT[m.kind]}
          </title>
        </circle>
      ))}
    </svg>
  );
}
