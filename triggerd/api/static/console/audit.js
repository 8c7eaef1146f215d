// The audit log: who changed what, newest first.
import { api } from './api.js';
import { codeBlock, h, json, table, time } from './dom.js';
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
    { label: 'Actor', cell: (e) => h('span', { class: 'break' }, e.actor) },
    { label: 'Action', cell: (e) => e.action },
    { label: 'Trigger', cell: (e) => (e.trigger_id ? h('a', { href: `#/triggers/${encodeURIComponent(e.trigger_id)}`, class: 'break' }, e.trigger_id) : '—') },
    { label: 'Event', cell: (e) => (e.event_id ? h('a', { href: `#/events/${encodeURIComponent(e.event_id)}`, class: 'break' }, e.event_id) : '—') },
    { label: 'Changes', cell: (e) => (e.changes && Object.keys(e.changes).length ? codeBlock(json(e.changes), 'small') : '—') },
  ], rows, 'Audit log') : h('p', { class: 'muted' }, 'No entries match.'));
  ctx.main.append(pager(body.pagination, '/audit', query));
}
