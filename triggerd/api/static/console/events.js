// The event log: filters, newest first, refreshing itself every few seconds.
import { api } from './api.js';
import { badge, clear, h, table, time } from './dom.js';
import { EXECUTION, SOURCES, choices, errorBox, filters, pager } from './ui.js';

const REFRESH_MS = 3000;

export function eventColumns({ trigger = true } = {}) {
  return [
    { label: 'Fired', cell: (e) => h('a', { href: `#/events/${encodeURIComponent(e.id)}` }, time(e.fired_at)) },
    trigger ? {
      label: 'Trigger',
      cell: (e) => (e.trigger_id
        ? h('a', { href: `#/triggers/${encodeURIComponent(e.trigger_id)}`, class: 'break' }, e.trigger_name || e.trigger_id)
        : h('span', { class: 'break' }, e.trigger_name || 'ephemeral')),
    } : null,
    { label: 'Source', cell: (e) => (e.is_test_run ? `${e.source} (test)` : e.source) },
    { label: 'Status', cell: (e) => badge(e.execution_status) },
    { label: 'Attempts', cell: (e) => String(e.attempts ?? 0) },
    { label: 'Response', cell: (e) => (e.response_status ? String(e.response_status) : (e.error_message ? h('span', { class: 'break' }, e.error_message) : '—')) },
  ].filter(Boolean);
}

export async function eventsPage(ctx) {
  const { params } = ctx;
  ctx.main.append(h('h1', null, 'Events'));
  ctx.main.append(filters('/events', params, [
    { name: 'trigger_id', label: 'Trigger ID', placeholder: 'UUID' },
    { name: 'source', label: 'Source', options: choices(SOURCES) },
    { name: 'execution_status', label: 'Status', options: choices(EXECUTION) },
    { name: 'is_test_run', label: 'Test runs', options: [['', 'Any'], ['true', 'Only test runs'], ['false', 'No test runs']] },
    { name: 'retention_status', label: 'Retention', options: [['', 'Active'], ['archived', 'Archived'], ['all', 'All']] },
  ]));
  const query = {};
  for (const name of ['trigger_id', 'source', 'execution_status', 'is_test_run', 'retention_status', 'page']) {
    query[name] = params.get(name);
  }
  const paused = h('input', { type: 'checkbox', id: 'pause-refresh' });
  const stamp = h('span', { class: 'muted', 'aria-live': 'off' });
  ctx.main.append(h('div', { class: 'refresh' },
    h('label', { for: 'pause-refresh' }, paused, ' Pause auto-refresh'), ' ', stamp));
  const list = h('div', { class: 'event-list' });
  ctx.main.append(list);

  async function load() {
    try {
      const body = await api('GET', 'api/v1/events', { query: { ...query, limit: 20 } });
      if (!ctx.live()) return;
      const rows = body.events || [];
      const rest = { ...query };
      delete rest.page;
      clear(list, rows.length ? table(eventColumns(), rows, 'Events') : h('p', { class: 'muted' }, 'No events match.'),
        pager(body.pagination, '/events', rest));
      stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (ctx.live()) clear(list, errorBox(error));
    }
  }
  await load();
  const timer = window.setInterval(() => {
    // Skip while paused, while the tab is hidden, or while focus is inside the list (a
    // keyboard user tabbing through rows would lose their place).
    if (paused.checked || document.hidden || list.contains(document.activeElement)) return;
    load();
  }, REFRESH_MS);
  ctx.onLeave(() => window.clearInterval(timer));
}
