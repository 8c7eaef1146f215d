// Endpoints and their circuits, open ones first (as the API orders them).
import { api } from './api.js';
import { badge, h, table, time } from './dom.js';
import { choices, errorBox, filters, notAvailable, pager } from './ui.js';

export async function endpointsPage(ctx) {
  const { params } = ctx;
  ctx.main.append(h('h1', null, 'Endpoints'));
  let body;
  try {
    body = await api('GET', 'api/v1/endpoints', { query: { state: params.get('state'), page: params.get('page'), limit: 20 } });
  } catch (error) {
    ctx.main.append(error.status === 404 ? notAvailable('Endpoint health') : errorBox(error));
    return;
  }
  ctx.main.append(filters('/endpoints', params, [
    { name: 'state', label: 'Circuit', options: choices(['open', 'half_open', 'closed']) },
  ]));
  const rows = body.endpoints || [];
  ctx.main.append(rows.length ? table([
    { label: 'URL', cell: (e) => h('span', { class: 'break' }, e.url) },
    { label: 'Circuit', cell: (e) => badge(e.state, e.state === 'closed' ? 'ok' : 'bad') },
    { label: 'Failures in a row', cell: (e) => String(e.consecutive_failures ?? 0) },
    { label: 'Last success', cell: (e) => time(e.last_success_at) },
    { label: 'Last failure', cell: (e) => time(e.last_failure_at) },
    { label: 'Next probe', cell: (e) => (e.next_probe_at ? time(e.next_probe_at) : '—') },
    { label: 'Triggers', cell: (e) => String(e.triggers ?? 0) },
  ], rows, 'Endpoints') : h('p', { class: 'muted' }, 'No endpoint has had a delivery attempt yet.'));
  ctx.main.append(pager(body.pagination, '/endpoints', { state: params.get('state') }));
}
