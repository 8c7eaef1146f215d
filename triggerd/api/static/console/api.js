// The public HTTP API, and the API key of this browser tab.
//
// URLs are relative to the page (served at <prefix>/ui), so the console works behind a
// proxy that mounts the daemon under a prefix. A 401 asks for a key, keeps it in
// sessionStorage (this tab only, gone when it closes) and retries. A key that may only
// read turns the console read-only: write controls are hidden (CSS on body.read-only,
// and pages do not build them).
import { h } from './dom.js';

const KEY_ITEM = 'triggerd.apiKey';
const BASE = new URL('.', window.location.href);

export const access = { readOnly: false, listeners: new Set() };

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.details = error.details ?? null;
    this.field = (error.details && typeof error.details === 'object' && error.details.field) || null;
  }
}

export function apiKey() {
  return window.sessionStorage.getItem(KEY_ITEM);
}

export function forgetKey() {
  window.sessionStorage.removeItem(KEY_ITEM);
  setReadOnly(false);
}

function setReadOnly(readOnly) {
  if (access.readOnly === readOnly) return;
  access.readOnly = readOnly;
  document.body.classList.toggle('read-only', readOnly);
  for (const listener of access.listeners) listener(readOnly);
}

function url(path, query) {
  const target = new URL(path.replace(/^\//, ''), BASE);
  for (const [name, value] of Object.entries(query || {})) {
    for (const one of [value].flat()) {
      if (one !== '' && one !== null && one !== undefined) target.searchParams.append(name, one);
    }
  }
  return target;
}

async function send(method, path, query, body) {
  const headers = { Accept: 'application/json' };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, query), init);
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch { data = null; }
  }
  return { status: response.status, ok: response.ok, data, key };
}

// `api('GET', 'api/v1/triggers', {query: {page: 2}})` → the parsed body, or throws ApiError.
export async function api(method, path, { query, body } = {}) {
  for (;;) {
    const reply = await send(method, path, query, body);
    if (reply.ok) return reply.data;
    if (reply.status === 401) {
      // Sent before a key was entered and answered after: try again with it rather than
      // ask a second time (slow answers to a page's first calls arrive that way).
      if (apiKey() && apiKey() !== reply.key) continue;
      await askForKey(new ApiError(401, reply.data).message);
      continue;
    }
    if (reply.status === 403 && method !== 'GET') setReadOnly(true);
    throw new ApiError(reply.status, reply.data);
  }
}

// /health answers 503 with the same body when something is down: both are an answer.
export async function health() {
  const reply = await send('GET', 'health');
  if (reply.data && reply.data.checks) return reply.data;
  throw new ApiError(reply.status, reply.data);
}

// Decide once per key whether it may write, before any page shows a write control
// (GET /api/v1/access names the key's scope: nothing is tried that would be refused).
export async function probeAccess() {
  try {
    const mine = await api('GET', 'api/v1/access');
    setReadOnly(mine.scope === 'read');
  } catch (error) {
    setReadOnly(false);  // unreachable for now: each page shows its own error
  }
}

// --- the key prompt ----------------------------------------------------------------------

let pending = null;

export function askForKey(reason) {
  if (!pending) {
    // The new key may be a read key: probe it before anyone goes on.
    pending = prompt(reason).then(() => { pending = null; return probeAccess(); });
  }
  return pending;
}

function prompt(reason) {
  return new Promise((resolve) => {
    const input = h('input', {
      id: 'api-key', type: 'password', autocomplete: 'off', required: true,
      'aria-describedby': 'api-key-help',
    });
    const dialog = h('dialog', { class: 'key-dialog', 'aria-labelledby': 'api-key-title' });
    let notice = null;
    let entered = false;
    const open = () => {
      if (notice) notice.remove();
      notice = null;
      document.body.append(dialog);
      dialog.showModal();
      input.focus();
    };
    const form = h('form', {
      onsubmit: (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        window.sessionStorage.setItem(KEY_ITEM, key);
        entered = true;
        dialog.close();
        dialog.remove();
        resolve();
      },
    },
    h('h2', { id: 'api-key-title' }, 'API key needed'),
    h('p', { id: 'api-key-help' }, apiKey()
      ? 'That key was not accepted. Enter another one.'
      : 'This daemon requires an API key. It is kept for this browser tab only.'),
    reason ? h('p', { class: 'muted' }, reason) : null,
    h('label', { for: 'api-key' }, 'API key'), input,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Use this key')));
    dialog.append(form);
    // Escape closes the prompt (Chromium lets a second Escape close a modal dialog whatever
    // its cancel handler does): the page then says a key is needed and offers the prompt
    // again, and the call that asked for the key waits until one is given.
    dialog.addEventListener('close', () => {
      if (entered) return;
      dialog.remove();
      const again = h('button', { type: 'button', class: 'primary', onclick: open }, 'Enter API key');
      notice = h('div', { class: 'panel key-needed', role: 'alert' },
        h('p', null, 'This daemon requires an API key: the console shows nothing without one.'), again);
      document.getElementById('main').prepend(notice);
      again.focus();
    });
    open();
  });
}
