// One trigger: its settings and config (secrets come redacted from the API), actions,
// upcoming runs, occurrence history, recent events and delivery numbers.
import { api } from './api.js';
import { add, badge, clear, codeBlock, facts, h, json, ms, occurrence, section, table, time } from './dom.js';
import { eventColumns } from './events.js';
import { labelChips } from './triggers.js';
import { errorBox, link, toast, write } from './ui.js';

const SCHEDULED = new Set(['time_scheduled', 'cron_scheduled', 'interval_scheduled']);

function percent(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)} %` : '—';
}

async function optional(promise) {
  // A section whose route this daemon lacks (404) is left out; other errors are shown.
  try {
    return { body: await promise };
  } catch (error) {
    return error.status === 404 ? { missing: true } : { error };
  }
}

function confirmDelete(trigger, onConfirm) {
  const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' });
  const close = () => { dialog.close(); dialog.remove(); };
  dialog.append(
    h('h2', { id: 'confirm-title' }, 'Delete this trigger?'),
    h('p', { id: 'confirm-text' }, '“', h('strong', { class: 'break' }, trigger.name),
      '” will stop firing and be removed. Its events stay in the event log.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'danger', onclick: () => { close(); onConfirm(); } }, 'Delete trigger'),
      h('button', { type: 'button', autofocus: true, onclick: close }, 'Cancel')),
  );
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

export async function triggerPage(ctx, id) {
  const path = `api/v1/triggers/${encodeURIComponent(id)}`;
  const trigger = await api('GET', path);
  const scheduled = SCHEDULED.has(trigger.type);
  const [upcoming, occurrences, events, stats] = await Promise.all([
    scheduled ? optional(api('GET', `${path}/upcoming`, { query: { count: 10 } })) : { missing: true },
    scheduled ? optional(api('GET', `${path}/occurrences`, { query: { limit: 10 } })) : { missing: true },
    optional(api('GET', 'api/v1/events', { query: { trigger_id: id, limit: 10 } })),
    optional(api('GET', 'api/v1/events/stats', { query: { trigger_id: id, window: '48h' } })),
  ]);

  const result = h('div', { class: 'action-result', role: 'status', 'aria-live': 'polite' });
  async function act(label, run) {
    clear(result, `${label}…`);
    try {
      await run();
    } catch (error) {
      clear(result, errorBox(error));
    }
  }
  const toggle = trigger.status === 'active' ? 'inactive' : 'active';
  const actions = write(() => h('div', { class: 'actions write' },
    h('a', { href: `#/triggers/${encodeURIComponent(id)}/edit`, class: 'button-link' }, 'Edit'),
    h('button', {
      type: 'button',
      onclick: () => act(toggle === 'active' ? 'Activating' : 'Deactivating', async () => {
        await api('PATCH', path, { body: { status: toggle } });
        toast(toggle === 'active' ? 'Trigger activated.' : 'Trigger deactivated.', 'ok');
        await ctx.rerender();
        // the redrawn page has the opposite button: keep a keyboard user's place on it
        const again = document.querySelector('[data-action="toggle"]');
        if (again) again.focus();
      }),
      'data-action': 'toggle',
    }, toggle === 'active' ? 'Activate' : 'Deactivate'),
    h('button', {
      type: 'button',
      onclick: () => act('Starting a test run', async () => {
        const run = await api('POST', `${path}/test`);
        clear(result, 'Test run started: ', h('a', { href: `#/events/${encodeURIComponent(run.event_id)}`, class: 'break' }, `event ${run.event_id}`));
      }),
    }, 'Test run'),
    h('button', {
      type: 'button', class: 'danger',
      onclick: () => confirmDelete(trigger, () => act('Deleting', async () => {
        await api('DELETE', path);
        toast('Trigger deleted.', 'ok');
        window.location.hash = '#/triggers';
      })),
    }, 'Delete…')));

  add(ctx.main, [  // not append(): `actions` is null for a read-only key
    h('p', { class: 'crumbs' }, h('a', { href: '#/triggers' }, 'Triggers'), ' / '),
    h('div', { class: 'title-row' }, h('h1', { class: 'break' }, trigger.name), badge(trigger.status)),
    actions, result,
  ]);
  const grid = h('div', { class: 'grid' });
  ctx.main.append(grid);
  grid.append(section('Settings', facts([
    ['ID', h('code', { class: 'break' }, trigger.id)],
    ['Type', trigger.type],
    ['Status', trigger.status],
    ['Status reason', trigger.status_reason === undefined ? undefined : trigger.status_reason],
    ['Labels', trigger.labels === undefined ? undefined : (labelChips(trigger.labels) || 'none')],
    ['Webhook URL', trigger.webhook_url ? h('code', { class: 'break' }, trigger.webhook_url) : undefined],
    ['Next run', scheduled ? time(trigger.next_scheduled_run) : undefined],
    ['Created', time(trigger.created_at)],
    ['Updated', time(trigger.updated_at)],
  ])));

  if (stats.body) {
    const s = (stats.body.triggers || [])[0] || stats.body;
    const by = s.by_execution_status || {};
    const done = (by.success || 0) + (by.failed || 0);
    const latency = stats.body.delivery_latency_ms || {};
    const delay = stats.body.fire_delay_ms || {};
    grid.append(section('Deliveries, last 48 h', facts([
      ['Events', String(s.total ?? 0)],
      ['Success rate', percent(by.success || 0, done)],
      ['Delivered / failed', `${by.success || 0} / ${by.failed || 0}`],
      ['Latency p50 / p95 / p99', `${ms(latency.p50)} / ${ms(latency.p95)} / ${ms(latency.p99)}`],
      ['Fire delay p50 / p99', scheduled ? `${ms(delay.p50)} / ${ms(delay.p99)}` : undefined],
    ])));
  } else if (stats.error) {
    grid.append(section('Deliveries, last 48 h', errorBox(stats.error)));
  }

  grid.append(section('Config', codeBlock(json(trigger.config))));

  if (upcoming.body) {
    const runs = upcoming.body.occurrences || [];
    grid.append(section('Upcoming runs', runs.length
      ? h('ol', { class: 'runs' }, runs.map((r) => h('li', null, occurrence(r))))
      : h('p', { class: 'muted' }, 'Nothing scheduled.')));
  } else if (upcoming.error) {
    grid.append(section('Upcoming runs', errorBox(upcoming.error)));
  }
  if (occurrences.body) {
    const rows = occurrences.body.occurrences || [];
    grid.append(section('Occurrence history', rows.length
      ? table([
        { label: 'Scheduled for', cell: (o) => time(o.scheduled_for) },
        { label: 'Outcome', cell: (o) => badge(o.outcome) },
        { label: 'Delay', cell: (o) => ms(o.delay_ms) },
        { label: 'Event', cell: (o) => (o.event_id ? h('a', { href: `#/events/${encodeURIComponent(o.event_id)}` }, 'view') : (o.note || '—')) },
      ], rows, 'Occurrence history')
      : h('p', { class: 'muted' }, 'No occurrences yet.')));
  } else if (occurrences.error) {
    grid.append(section('Occurrence history', errorBox(occurrences.error)));
  }
  const recent = section('Recent events');
  recent.classList.add('wide');
  if (events.body) {
    const rows = events.body.events || [];
    recent.append(rows.length ? table(eventColumns({ trigger: false }), rows, 'Recent events') : h('p', { class: 'muted' }, 'No events yet.'),
      h('p', null, h('a', { href: link('/events', { trigger_id: id }) }, 'All events of this trigger')));
  } else if (events.error) {
    recent.append(errorBox(events.error));
  }
  grid.append(recent);
}
