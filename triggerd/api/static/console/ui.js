// Pieces several pages share: page links, filter forms, notices, the write-control rule.
import { access } from './api.js';
import { h } from './dom.js';

// Where a multi-value filter (labels) splits: spaces or commas before the next `key:`.
const MULTI_SPLIT = /[\s,]+(?=[a-z0-9][a-z0-9._\/-]*:)/;

// The current route's path and query, e.g. #/events?source=webhook.
export function parseHash() {
  const raw = window.location.hash.replace(/^#/, '') || '/overview';
  const [path, query = ''] = raw.split('?');
  return { path: path.replace(/\/+$/, '') || '/overview', params: new URLSearchParams(query) };
}

export function link(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    for (const one of [value].flat()) {
      if (one !== '' && one !== null && one !== undefined) query.append(name, one);
    }
  }
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ''}`;
}

// A write control: not built at all for a read-only key, and hidden by CSS should the key
// turn out read-only after the page was drawn.
export function write(build) {
  return access.readOnly ? null : build();
}

export function pager(pagination, path, params) {
  if (!pagination) return null;
  const { current_page: page, total_pages: pages, total_records: total } = pagination;
  const to = (n) => link(path, { ...params, page: String(n) });
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    page > 1 ? h('a', { href: to(page - 1), rel: 'prev' }, '← Newer') : h('span', { class: 'muted' }, '← Newer'),
    h('span', null, `Page ${page} of ${Math.max(pages, 1)} · ${total} in all`),
    page < pages ? h('a', { href: to(page + 1), rel: 'next' }, 'Older →') : h('span', { class: 'muted' }, 'Older →'));
}

// A filter form whose values live in the URL: submitting navigates, so a filtered view
// can be bookmarked and the back button works.
export function filters(path, params, fields) {
  const controls = fields.map((field) => {
    const id = `filter-${field.name}`;
    const value = params.get(field.name) || '';
    const control = field.options
      ? h('select', { id, name: field.name },
        field.options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)))
      : h('input', { id, name: field.name, value, placeholder: field.placeholder || null,
        type: 'text', autocomplete: 'off', spellcheck: 'false' });
    return h('div', { class: 'field' }, h('label', { for: id }, field.label), control);
  });
  const form = h('form', {
    class: 'filters', role: 'search',
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const next = {};
      for (const field of fields) {
        const raw = String(data.get(field.name) || '').trim();
        // Several `key:value` pairs: a space or comma starts a new one only before the next
        // `key:`, so a value may hold spaces and commas (`region:eu, us`).
        next[field.name] = field.multi ? raw.split(MULTI_SPLIT).filter(Boolean) : raw;
      }
      window.location.hash = link(path, next);
    },
  }, controls, h('div', { class: 'filter-actions' }, h('button', { type: 'submit' }, 'Apply'),
    h('a', { href: `#${path}`, class: 'button-link' }, 'Clear')));
  return form;
}

export function choices(values, any = 'Any') {
  return [['', any], ...values.map((v) => [v, v])];
}

export function errorBox(error) {
  return h('div', { class: 'error', role: 'alert' },
    h('strong', null, error.status ? `Error ${error.status}: ` : 'Error: '), error.message || String(error));
}

export function notAvailable(what) {
  return h('p', { class: 'muted unavailable' }, `${what}: not available from this daemon.`);
}

let toastTimer = 0;

export function toast(message, kind = 'info') {
  const box = document.getElementById('toast');
  box.className = `toast toast-${kind} shown`;
  box.textContent = message;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => { box.className = 'toast'; }, 6000);
}

export const TYPES = ['webhook', 'time_scheduled', 'cron_scheduled', 'interval_scheduled'];
export const STATUSES = ['active', 'inactive'];
export const SOURCES = ['webhook', 'scheduler', 'manual-test', 'backfill'];
export const EXECUTION = ['pending', 'retrying', 'success', 'failed', 'published'];
