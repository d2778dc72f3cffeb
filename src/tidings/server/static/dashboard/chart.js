// Time-series charts on uPlot (vendored: ../vendor/uplot, see its README). uPlot puts
// series labels in with textContent, so topic and group names are safe in legends.
//
// x values are seconds since the epoch (uPlot's unit), never milliseconds. Times read
// in 24-hour form, in the browser's time zone: ticks, the legend and the cursor.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const MIN_SPAN_S = 60; // a chart with one point, or none, shows the minute up to it

const pad = (n) => String(n).padStart(2, "0");

/** Seconds since the epoch as 24-hour local time: "14:05", "14:05:09", "12-05 14:05". */
export function clock(s, { seconds = false, date = false } = {}) {
  const d = new Date(s * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? ":" + pad(d.getSeconds()) : ""}`;
  return date ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

/** Tick labels for an x axis: seconds where ticks are under a minute apart, the date
 * on the first tick and wherever the day changes. */
function timeTicks(u, splits, axisIdx, foundSpace, foundIncr) {
  let day = null;
  return splits.map((s, i) => {
    if (s == null) return null;
    const d = new Date(s * 1000).toDateString();
    const date = foundIncr >= 3600 && (i === 0 || d !== day);
    day = d;
    return clock(s, { seconds: foundIncr < 60, date });
  });
}

/** The x range: from the first x to the last, at least MIN_SPAN_S wide. Not uPlot's
 * own: for a single time it proposes a range of 86400 / 1e-3 s, a thousand days on. */
export function timeRange(u, min, max) {
  const xs = u.data && u.data[0];
  if (xs && xs.length) {
    min = xs[0];
    max = xs[xs.length - 1];
  }
  if (min == null || max == null || !Number.isFinite(min) || !Number.isFinite(max)) {
    const now = Date.now() / 1000;
    return [now - MIN_SPAN_S, now];
  }
  if (max - min < MIN_SPAN_S) return [max - MIN_SPAN_S, max];
  return [min, max];
}

export class TimeChart {
  /** A chart in a new element of its own; `yLabel` names the unit; `points` draws each
   * value as a dot too (for values apart in time, such as windows); `tickSpace`: the
   * least room between two time ticks, in px (uPlot's own default when not given). */
  constructor({ title, yLabel = "", height = 180, points = false, tickSpace = undefined }) {
    this.el = h("div", { class: "chart", "data-chart": title });
    this.points = points;
    this.tickSpace = tickSpace;
    this.el.chart = this; // for tests and the curious: el.chart.plot is the uPlot
    this.title = title;
    this.yLabel = yLabel;
    this.height = height;
    this.plot = null;
    this.key = null;
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize({ width: this._width(), height: this.height });
    });
    this.resize.observe(this.el);
  }

  _width() {
    return Math.max(300, this.el.clientWidth || 600);
  }

  /** xs: seconds since the epoch, ascending; series: [{label, values}] of the same length
   * (null where a series has no value: a gap, as across a restart of the hub). */
  update(xs, series) {
    const key = series.map((s) => s.label).join("\u0000");
    if (!this.plot || key !== this.key) {
      if (this.plot) this.plot.destroy();
      this.key = key;
      this.plot = new uPlot({
        title: this.title,
        width: this._width(),
        height: this.height,
        series: [
          { label: "time", value: (u, v) => (v == null ? "–" : clock(v, { seconds: true, date: true })) },
          ...series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length],
            width: 1.5,
            spanGaps: false,
            points: this.points ? { show: true, size: 7 } : { show: false },
          })),
        ],
        axes: [
          this.tickSpace ? { values: timeTicks, space: this.tickSpace } : { values: timeTicks },
          { label: this.yLabel, size: 60 },
        ],
        scales: {
          x: { time: true, range: timeRange },
          y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)] },
        },
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      }, [xs, ...series.map((s) => s.values)], this.el);
      return;
    }
    this.plot.setData([xs, ...series.map((s) => s.values)]);
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
