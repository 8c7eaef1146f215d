// The triggers: filters (type, status, labels), newest first, a page at a time.
import { api } from './api.js';
import { badge, h, table, time } from './dom.js';
import { STATUSES, TYPES, choices, errorBox, filters, pager, write } from './ui.js';

export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return null;
  return h('ul', { class: 'chips', 'aria-label': 'Labels' },
    entries.map(([key, value]) => h('li', { class: 'chip' }, value === '' ? key : `${key}: ${value}`)));
}

export async function triggersPage(ctx) {
  const { params } = ctx;
  ctx.main.append(h('div', { class: 'title-row' }, h('h1', null, 'Triggers'),
    write(() => h('a', { href: '#/triggers/new', class: 'button-link primary write' }, 'New trigger'))));
  ctx.main.append(filters('/triggers', params, [
    { name: 'type', label: 'Type', options: choices(TYPES) },
    { name: 'status', label: 'Status', options: choices(STATUSES) },
    { name: 'label', label: 'Labels', placeholder: 'team:payments env:prod', multi: true },
  ]));
  const query = {
    type: params.get('type'), status: params.get('status'), label: params.getAll('label'),
    page: params.get('page'), limit: 20,
  };
  // The filter box shows every label= given, space separated.
  const labelInput = ctx.main.querySelector('#filter-label');
  if (labelInput) labelInput.value = params.getAll('label').join(' ');
  let body;
  try {
    body = await api('GET', 'api/v1/triggers', { query });
  } catch (error) {
    ctx.main.append(errorBox(error));
    return;
  }
  const rows = body.triggers || [];
  if (!rows.length) {
    ctx.main.append(h('p', { class: 'muted' }, 'No triggers match.'));
  } else {
    ctx.main.append(table([
      { label: 'Name', cell: (t) => h('a', { href: `#/triggers/${encodeURIComponent(t.id)}`, class: 'break' }, t.name) },
      { label: 'Type', cell: (t) => t.type },
      { label: 'Status', cell: (t) => badge(t.status) },
      { label: 'Next run', cell: (t) => (t.next_scheduled_run ? time(t.next_scheduled_run) : '—') },
      { label: 'Labels', cell: (t) => labelChips(t.labels) },
    ], rows, 'Triggers'));
  }
  const rest = {
    type: params.get('type'), status: params.get('status'), label: params.getAll('label'),
  };
  ctx.main.append(pager(body.pagination, '/triggers', rest));
}
