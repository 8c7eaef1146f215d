// One event: its fields, payload, the timeline of delivery attempts, and replay.
import { api } from './api.js';
import { badge, clear, codeBlock, facts, h, json, ms, section, time } from './dom.js';
import { errorBox, write } from './ui.js';

const IN_FLIGHT = new Set(['pending', 'retrying']);
const REFRESH_MS = 2000;

function attempts(list) {
  if (!list.length) return h('p', { class: 'muted' }, 'No delivery attempt yet.');
  return h('ol', { class: 'timeline' }, list.map((a) => h('li', { class: `attempt ${a.response_status && a.response_status < 300 ? 'ok' : 'bad'}` },
    h('div', { class: 'attempt-head' }, h('strong', null, `Attempt ${a.attempt}`), ' ', time(a.started_at)),
    facts([
      ['Response', a.response_status === null || a.response_status === undefined ? '—' : String(a.response_status)],
      ['Latency', ms(a.latency_ms)],
      ['Error', a.error ? h('span', { class: 'break' }, a.error) : undefined],
    ]))));
}

export async function eventPage(ctx, id) {
  const path = `api/v1/events/${encodeURIComponent(id)}`;
  const body = h('div');
  const result = h('div', { class: 'action-result', role: 'status', 'aria-live': 'polite' });
  let timer = 0;
  ctx.onLeave(() => window.clearTimeout(timer));

  function draw(event) {
    const title = event.trigger_name || 'ephemeral test run';
    clear(body,
      h('p', { class: 'crumbs' }, h('a', { href: '#/events' }, 'Events'), ' / '),
      h('div', { class: 'title-row' }, h('h1', { class: 'break' }, `Event of ${title}`), badge(event.execution_status)),
      write(() => h('div', { class: 'actions write' }, h('button', {
        type: 'button', disabled: IN_FLIGHT.has(event.execution_status),
        onclick: async () => {
          clear(result, 'Replaying…');
          try {
            const answer = await api('POST', `${path}/replay`);
            clear(result, `Replay accepted: attempt ${answer.attempt} is on its way.`);
            refresh();
          } catch (error) {
            clear(result, errorBox(error));
          }
        },
      }, 'Replay'))),
      result,
      h('div', { class: 'grid' },
        section('Event', facts([
          ['ID', h('code', { class: 'break' }, event.id)],
          ['Trigger', event.trigger_id ? h('a', { href: `#/triggers/${encodeURIComponent(event.trigger_id)}`, class: 'break' }, title) : title],
          ['Type', event.trigger_type],
          ['Source', event.source],
          ['Test run', event.is_test_run ? 'yes' : 'no'],
          ['Note', event.note || undefined],
          ['Scheduled for', event.scheduled_for ? time(event.scheduled_for) : undefined],
          ['Fired', time(event.fired_at)],
          ['Delivered', event.delivered_at ? time(event.delivered_at) : undefined],
          ['Attempts', String(event.attempts ?? 0)],
          ['Error', event.error_message ? h('span', { class: 'break' }, event.error_message) : undefined],
          ['Retention', event.retention_status],
        ])),
        section('Delivery attempts', attempts(event.delivery_attempts || [])),
        section('Payload', codeBlock(json(event.payload)))),
    );
  }

  async function refresh() {
    window.clearTimeout(timer);
    try {
      const event = await api('GET', path);
      if (!ctx.live()) return;
      const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.textContent : null;
      draw(event);
      if (focused) {
        // keep a keyboard user's place across the redraw
        const again = [...body.querySelectorAll('button, a')].find((el) => el.textContent === focused);
        if (again) again.focus();
      }
      if (IN_FLIGHT.has(event.execution_status)) timer = window.setTimeout(refresh, REFRESH_MS);
    } catch (error) {
      if (ctx.live()) clear(result, errorBox(error));
    }
  }

  draw(await api('GET', path));
  ctx.main.append(body);
  const first = body.querySelector('.badge');
  if (first && IN_FLIGHT.has(first.textContent)) timer = window.setTimeout(refresh, REFRESH_MS);
}
