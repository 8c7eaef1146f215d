// DOM helpers. Everything the API sends (names, payloads, errors, labels) reaches the page
// as text nodes or attribute values: this module never parses markup.

const PROPS = new Set(['value', 'checked', 'selected', 'disabled', 'hidden']);

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  add(el, children);
  return el;
}

export function add(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

export const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  add(el, children);
  return el;
}

// --- formatting --------------------------------------------------------------------------

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC');
}

export function ago(iso) {
  if (!iso) return '';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const abs = Math.abs(s);
  const unit = abs < 60 ? [abs, 's'] : abs < 3600 ? [Math.round(abs / 60), 'min']
    : abs < 86400 ? [Math.round(abs / 3600), 'h'] : [Math.round(abs / 86400), 'd'];
  return s >= 0 ? `${unit[0]} ${unit[1]} ago` : `in ${unit[0]} ${unit[1]}`;
}

export function ms(value) {
  if (value === null || value === undefined) return '—';
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || text}` }, text);
}

export function time(iso) {
  return h('time', { datetime: iso || null, title: iso ? ago(iso) : null }, when(iso));
}

// A definition list from [label, value] pairs (value: text or nodes).
export function facts(pairs) {
  const dl = h('dl', { class: 'facts' });
  for (const [label, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h('dt', null, label), h('dd', null, value === null ? '—' : value));
  }
  return dl;
}

// A table that reads as cards on a narrow screen (each cell carries its column's name).
export function table(columns, rows, caption) {
  const head = h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c.label)));
  const body = rows.map((row) => h('tr', null, columns.map((c) => {
    const cell = c.cell(row);
    return h('td', { 'data-label': c.label }, cell === null || cell === undefined ? '—' : cell);
  })));
  return h('table', { class: 'list' }, caption ? h('caption', { class: 'sr-only' }, caption) : null,
    h('thead', null, head), h('tbody', null, body));
}

export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', null, title), children);
}

export function muted(text) {
  return h('p', { class: 'muted' }, text);
}

// A block of JSON or code. Focusable, as it may scroll: a keyboard user can scroll it too.
export function codeBlock(text, extra = '') {
  return h('pre', { class: `code ${extra}`.trim(), tabindex: '0' }, text);
}

// One occurrence from /upcoming or /preview: its wall time in the trigger's zone, with the
// UTC time beside it when the zone is not UTC.
export function occurrence(o) {
  const local = o.local ? String(o.local).replace('T', ' ') : null;
  const utc = !local || /(\+00:00|Z)$/.test(local);
  return h('time', { datetime: o.fire_at || o.scheduled_for },
    local || when(o.scheduled_for), utc ? null : h('span', { class: 'muted' }, ` (${when(o.scheduled_for)})`));
}
