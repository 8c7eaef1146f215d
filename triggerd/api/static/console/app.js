// The console's entry point: hash routing, the access state, and page lifecycle.
import { access, apiKey, forgetKey, probeAccess } from './api.js';
import { clear, h } from './dom.js';
import { auditPage } from './audit.js';
import { endpointsPage } from './endpoints.js';
import { eventPage } from './event.js';
import { eventsPage } from './events.js';
import { overviewPage } from './overview.js';
import { triggerForm } from './form.js';
import { triggerPage } from './trigger.js';
import { triggersPage } from './triggers.js';
import { errorBox, parseHash } from './ui.js';

const ROUTES = [
  [/^\/overview$/, 'overview', () => overviewPage],
  [/^\/triggers$/, 'triggers', () => triggersPage],
  [/^\/triggers\/new$/, 'triggers', () => (ctx) => triggerForm(ctx, null)],
  [/^\/triggers\/([^/]+)\/edit$/, 'triggers', (m) => (ctx) => triggerForm(ctx, decodeURIComponent(m[1]))],
  [/^\/triggers\/([^/]+)$/, 'triggers', (m) => (ctx) => triggerPage(ctx, decodeURIComponent(m[1]))],
  [/^\/events$/, 'events', () => eventsPage],
  [/^\/events\/([^/]+)$/, 'events', (m) => (ctx) => eventPage(ctx, decodeURIComponent(m[1]))],
  [/^\/endpoints$/, 'endpoints', () => endpointsPage],
  [/^\/audit$/, 'audit', () => auditPage],
];

const main = document.getElementById('main');
let current = null;  // {controller, cleanups}
let renders = 0;

function notFound(ctx) {
  ctx.main.append(h('h1', null, 'Not found'), h('p', null, 'No such page. ',
    h('a', { href: '#/overview' }, 'Go to the overview'), '.'));
}

async function render({ focus }) {
  if (current) {
    current.controller.abort();
    for (const cleanup of current.cleanups) cleanup();
  }
  const { path, params } = parseHash();
  let page = notFound;
  let sectionName = null;
  for (const [pattern, name, make] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      page = make(match);
      sectionName = name;
      break;
    }
  }
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === sectionName) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const state = { controller: new AbortController(), cleanups: [] };
  current = state;
  clear(main, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  const ctx = {
    main: document.createElement('div'),
    params,
    path,
    signal: state.controller.signal,
    // a page that registers a cleanup after it was left (an answer came late) runs it now
    onLeave: (fn) => { if (current === state) state.cleanups.push(fn); else fn(); },
    rerender: () => render({ focus: false }),
    // true while this page is still the one shown (an answer may arrive after leaving)
    live: () => current === state,
  };
  try {
    await page(ctx);
  } catch (error) {
    ctx.main.append(errorBox(error));
  }
  if (current !== state) return;
  clear(main, ctx.main.childNodes.length ? [...ctx.main.childNodes] : []);
  const title = main.querySelector('h1');
  document.title = `${title ? title.textContent : 'triggerd'} · triggerd console`;
  if (focus) main.focus({ preventScroll: false });
  // Counts pages drawn with their data: tests and bench/console.py wait on it.
  renders += 1;
  document.body.dataset.rendered = String(renders);
}

function showAccess() {
  const box = document.getElementById('access');
  clear(box);
  if (access.readOnly) box.append(h('span', { class: 'badge badge-readonly' }, 'read-only key'));
  if (apiKey()) {
    box.append(h('button', {
      type: 'button', class: 'link-button',
      onclick: () => { forgetKey(); window.location.reload(); },
    }, 'Forget key'));
  }
}

access.listeners.add(() => { showAccess(); });

async function start() {
  await probeAccess();  // before any page: a read key never sees a write control
  showAccess();
  window.addEventListener('hashchange', () => { render({ focus: true }).then(showAccess); });
  await render({ focus: false });
  showAccess();
  document.body.dataset.ready = 'true';
}

start();
