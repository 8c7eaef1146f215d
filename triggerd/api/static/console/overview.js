// Overview: health and roles, the last hour's fires and deliveries, fire delay, circuits.
import { api, health } from './api.js';
import { barChart } from './chart.js';
import { badge, facts, h, ms, section, table } from './dom.js';
import { errorBox, link, notAvailable } from './ui.js';

const BUCKET_MINUTES = 5;
const BUCKETS = 12;

function healthPanel(body) {
  const checks = body.checks || {};
  const rows = [];
  for (const [name, value] of Object.entries(checks)) {
    if (value && typeof value === 'object') {
      for (const [part, state] of Object.entries(value)) rows.push([`${name}: ${part}`, state]);
    } else {
      rows.push([name, value]);
    }
  }
  return section('Health',
    h('p', null, 'Status: ', badge(String(body.status), body.status === 'healthy' ? 'ok' : 'bad')),
    facts(rows.map(([name, state]) => [name, badge(String(state), state === 'ok' ? 'ok' : 'bad')])));
}

// Fires and deliveries per 5 minutes over the last hour. The stats route counts events
// fired within a window ending now; windows of 5, 10, … 60 minutes give cumulative counts
// whose differences are the buckets: 12 small queries, no event list paged through.
async function lastHour() {
  const windows = Array.from({ length: BUCKETS }, (_, i) => `${(i + 1) * BUCKET_MINUTES}m`);
  const stats = await Promise.all(windows.map((window) => api('GET', 'api/v1/events/stats', { query: { window, limit: 5 } })));
  const cumulative = stats.map((s) => [s.total, (s.by_execution_status || {}).success || 0, (s.by_execution_status || {}).failed || 0]);
  const buckets = [];
  for (let i = BUCKETS - 1; i >= 0; i -= 1) {
    const outer = cumulative[i];
    const inner = i > 0 ? cumulative[i - 1] : [0, 0, 0];
    buckets.push({
      label: `-${(i + 1) * BUCKET_MINUTES}m`,
      values: outer.map((v, k) => Math.max(0, v - inner[k])),
    });
  }
  return { buckets, hour: stats[BUCKETS - 1] };
}

export async function overviewPage(ctx) {
  ctx.main.append(h('h1', null, 'Overview'));
  const grid = h('div', { class: 'grid' });
  ctx.main.append(grid);
  const [healthBody, hour, circuits] = await Promise.allSettled([
    health(), lastHour(), api('GET', 'api/v1/endpoints', { query: { state: 'open', limit: 10 } }),
  ]);
  grid.append(healthBody.status === 'fulfilled' ? healthPanel(healthBody.value) : section('Health', errorBox(healthBody.reason)));
  if (hour.status === 'fulfilled') {
    const { buckets, hour: s } = hour.value;
    const delay = s.fire_delay_ms || {};
    const latency = s.delivery_latency_ms || {};
    const byStatus = s.by_execution_status || {};
    grid.append(section('Last hour',
      h('div', { class: 'numbers' },
        number('Fired', s.total), number('Delivered', byStatus.success || 0), number('Failed', byStatus.failed || 0),
        number('Fire delay p50', ms(delay.p50)), number('Fire delay p99', ms(delay.p99)),
        number('Delivery p50', ms(latency.p50)), number('Delivery p99', ms(latency.p99))),
      barChart({
        title: 'Events fired, delivered and failed per 5 minutes, last hour',
        buckets,
        series: [{ name: 'fired', cls: 's-fired' }, { name: 'delivered', cls: 's-ok' }, { name: 'failed', cls: 's-bad' }],
      })));
    const busiest = (s.triggers || []).filter((t) => t.total > 0);
    grid.append(section('Busiest triggers, last hour', busiest.length
      ? table([
        { label: 'Trigger', cell: (t) => (t.trigger_id ? h('a', { href: `#/triggers/${encodeURIComponent(t.trigger_id)}` }, t.trigger_name || t.trigger_id) : 'ephemeral test runs') },
        { label: 'Events', cell: (t) => String(t.total) },
        { label: 'Delivered', cell: (t) => String((t.by_execution_status || {}).success || 0) },
        { label: 'Failed', cell: (t) => String((t.by_execution_status || {}).failed || 0) },
      ], busiest, 'Busiest triggers')
      : h('p', { class: 'muted' }, 'No events in the last hour.')));
  } else {
    grid.append(section('Last hour', errorBox(hour.reason)));
  }
  if (circuits.status === 'fulfilled') {
    const open = circuits.value.endpoints || [];
    grid.append(section('Open circuits', open.length
      ? h('ul', { class: 'plain' }, open.map((e) => h('li', null, badge(e.state, e.state === 'closed' ? 'ok' : 'bad'), ' ', h('span', { class: 'break' }, e.url))))
      : h('p', null, 'None: every endpoint is taking deliveries.'),
    h('p', null, h('a', { href: link('/endpoints') }, 'All endpoints'))));
  } else if (circuits.reason.status === 404) {
    grid.append(section('Open circuits', notAvailable('Endpoint health')));
  } else {
    grid.append(section('Open circuits', errorBox(circuits.reason)));
  }
}

function number(label, value) {
  return h('div', { class: 'number' }, h('span', { class: 'number-value' }, String(value)), h('span', { class: 'number-label' }, label));
}
