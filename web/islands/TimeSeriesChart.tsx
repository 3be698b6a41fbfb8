import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { usePoll } from "./_api.ts";

/** One line of a {@linkcode TimeSeriesChart}. */
export interface ChartSeries {
  label: string;
  /** A CSS color for the line. */
  color: string;
  /** Which y axis: the left (default) or the right, for a second unit (bytes and seconds of lag). */
  axis?: "left" | "right";
}

/** Time series data: unix seconds, then one array of values per series (null for a gap). */
export interface ChartData {
  t: number[];
  values: (number | null)[][];
}

/** Props of {@linkcode TimeSeriesChart}. */
export interface TimeSeriesChartProps {
  title: string;
  series: ChartSeries[];
  initial: ChartData;
  /** Polled for new data when given (same shape as `initial`). */
  url?: string;
  intervalMs?: number;
  /** Unit labels of the y axes. */
  leftUnit?: string;
  rightUnit?: string;
  height?: number;
  testid?: string;
}

function toAligned(d: ChartData): uPlot.AlignedData {
  return [d.t, ...d.values] as unknown as uPlot.AlignedData;
}

/**
 * A time-series line chart drawn with uPlot (small and fast: thousands of points redraw in a
 * millisecond), fed by short polling. The server renders the latest values as text, which is what a
 * browser without JavaScript shows; the chart replaces nothing and is drawn beside it. Reusable for
 * any series over time: throughput on the overview, replication lag in bytes and seconds.
 */
export function TimeSeriesChart(p: TimeSeriesChartProps) {
  const poll = usePoll<ChartData>(p.url, p.intervalMs ?? 5_000, p.initial);
  const data = poll.data;
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<uPlot>();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const axisColor = getComputedStyle(el).color;
    const u = new uPlot(
      {
        width: Math.max(240, el.clientWidth),
        height: p.height ?? 220,
        series: [
          {},
          ...p.series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            scale: s.axis === "right" ? "right" : "left",
            spanGaps: false,
          })),
        ],
        scales: { x: { time: true } },
        axes: [
          { stroke: axisColor, grid: { stroke: "#8883" } },
          { scale: "left", label: p.leftUnit, stroke: axisColor, grid: { stroke: "#8883" } },
          ...(p.series.some((s) => s.axis === "right")
            ? [{
              scale: "right",
              side: 1 as const,
              label: p.rightUnit,
              stroke: axisColor,
              grid: { show: false },
            }]
            : []),
        ],
        legend: { live: true },
      },
      toAligned(data),
      el,
    );
    chart.current = u;
    const resize = new ResizeObserver(() =>
      u.setSize({ width: Math.max(240, el.clientWidth), height: p.height ?? 220 })
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      chart.current = undefined;
    };
  }, []);

  useEffect(() => {
    chart.current?.setData(toAligned(data));
  }, [data]);

  const points = data.t.length;
  const last = points ? data.values.map((v) => v[points - 1]) : [];
  return (
    <figure class="chart" data-testid={p.testid} data-points={points}>
      <figcaption>
        {p.title}
        {points
          ? (
            <span class="muted">
              {" · latest: "}
              {p.series.map((s, i) => `${s.label} ${last[i] ?? "–"}`).join(", ")}
            </span>
          )
          : <span class="muted">· no data yet</span>}
        {poll.error && <span class="error">· live update failed: {poll.error}</span>}
      </figcaption>
      <div class="chart-box" ref={box} />
    </figure>
  );
}
