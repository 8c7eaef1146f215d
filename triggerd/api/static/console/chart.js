// A small grouped bar chart in SVG, drawn from numbers the API gave: no chart library.
// Colours come from the stylesheet (classes), as the CSP allows no inline styles.
import { h, svg } from './dom.js';

// buckets: [{label, values: [n, ...]}]; series: [{name, cls}]
export function barChart({ title, buckets, series }) {
  const width = 640;
  const height = 200;
  const pad = { top: 12, right: 8, bottom: 28, left: 40 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const max = Math.max(1, ...buckets.flatMap((b) => b.values));
  const step = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(2, (step - 4) / series.length);
  const y = (v) => pad.top + plotH - (v / max) * plotH;
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': title,
    preserveAspectRatio: 'xMidYMid meet',
  }, svg('title', null, title));
  for (const tick of [0, Math.round(max / 2), max]) {
    chart.append(
      svg('line', { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: 'gridline' }),
      svg('text', { x: pad.left - 6, y: y(tick) + 4, 'text-anchor': 'end', class: 'axis' }, String(tick)),
    );
  }
  buckets.forEach((bucket, i) => {
    bucket.values.forEach((value, s) => {
      const x = pad.left + i * step + 2 + s * barW;
      chart.append(svg('rect', {
        x, y: y(value), width: Math.max(1, barW - 1), height: Math.max(0, pad.top + plotH - y(value)),
        class: `bar ${series[s].cls}`,
      }, svg('title', null, `${bucket.label}: ${value} ${series[s].name}`)));
    });
    if (i % Math.ceil(buckets.length / 6) === 0) {
      chart.append(svg('text', { x: pad.left + i * step + step / 2, y: height - 8, 'text-anchor': 'middle', class: 'axis' }, bucket.label));
    }
  });
  const legend = h('ul', { class: 'legend' }, series.map((s) => h('li', null,
    h('span', { class: `swatch ${s.cls}`, 'aria-hidden': 'true' }), s.name)));
  return h('figure', { class: 'chart-box' }, chart, h('figcaption', null, title), legend);
}
