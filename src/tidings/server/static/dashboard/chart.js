// Time-series charts on uPlot (vendored: ../vendor/uplot, see its README). uPlot puts
// series labels in with textContent, so topic and group names are safe in legends.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

export class TimeChart {
  /** A chart in a new element of its own; `yLabel` names the unit. */
  constructor({ title, yLabel = "", height = 180 }) {
    this.el = h("div", { class: "chart", "data-chart": title });
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

  /** xs: seconds since the epoch; series: [{label, values}] of the same length. */
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
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length],
            width: 1.5,
            spanGaps: true,
            points: { show: false },
          })),
        ],
        axes: [{}, { label: this.yLabel, size: 60 }],
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
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
