// The audit log: who changed what, newest first.
import { api } from './api.js';
import { h, table, time } from './dom.js';

function shortLink(href, id, what) {
  return h('a', { href, title: id, class: 'nowrap', 'aria-label': `${what} ${id}` }, h('code', null, `${String(id).slice(0, 8)}…`));
}

function compact(value) {
  return value === null || value === undefined ? '—' : JSON.stringify(value);
}

// {field: [old, new]} as one line a field: `name: "a" → "b"`.
function changes(set) {
  const entries = Object.entries(set || {});
  if (!entries.length) return '—';
  return h('ul', { class: 'changes' }, entries.map(([name, pair]) => {
    const [before, after] = Array.isArray(pair) ? pair : [undefined, pair];
    return h('li', { class: 'break' }, h('strong', null, name), ': ', compact(before), ' → ', compact(after));
  }));
}
import { errorBox, filters, notAvailable, pager } from './ui.js';

export async function auditPage(ctx) {
  const { params } = ctx;
  ctx.main.append(h('h1', null, 'Audit log'));
  const query = { trigger_id: params.get('trigger_id'), actor: params.get('actor'), action: params.get('action') };
  let body;
  try {
    body = await api('GET', 'api/v1/audit', { query: { ...query, page: params.get('page'), limit: 20 } });
  } catch (error) {
    ctx.main.append(error.status === 404 ? notAvailable('The audit log') : errorBox(error));
    return;
  }
  ctx.main.append(filters('/audit', params, [
    { name: 'trigger_id', label: 'Trigger ID', placeholder: 'UUID' },
    { name: 'actor', label: 'Actor' },
    { name: 'action', label: 'Action', placeholder: 'trigger.updated' },
  ]));
  const rows = body.entries || [];
  ctx.main.append(rows.length ? table([
    { label: 'When', cell: (e) => time(e.at) },
    { label: 'Actor', cell: (e) => h('span', { class: 'nowrap' }, e.actor) },
    { label: 'Action', cell: (e) => h('span', { class: 'nowrap' }, e.action) },
    { label: 'Trigger', cell: (e) => (e.trigger_id ? shortLink(`#/triggers/${encodeURIComponent(e.trigger_id)}`, e.trigger_id, 'trigger') : '—') },
    { label: 'Event', cell: (e) => (e.event_id ? shortLink(`#/events/${encodeURIComponent(e.event_id)}`, e.event_id, 'event') : '—') },
    { label: 'Changes', cell: (e) => changes(e.changes) },
  ], rows, 'Audit log') : h('p', { class: 'muted' }, 'No entries match.'));
  ctx.main.append(pager(body.pagination, '/audit', query));
}
