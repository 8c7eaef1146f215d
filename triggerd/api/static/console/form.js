// Create and edit a trigger: simple fields for the common settings, JSON for the rest,
// a live preview of the next runs, and the API's validation errors shown at their field
// (the error envelope's details.field, e.g. `config.cron`).
import { ApiError, access, api } from './api.js';
import { clear, h, json, occurrence } from './dom.js';
import { STATUSES, TYPES, errorBox, toast } from './ui.js';

const METHODS = ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'];
// [config key, label, the types that use it, input attributes, help]
const SIMPLE = [
  ['endpoint', 'Endpoint URL', TYPES, { type: 'url', placeholder: 'https://example.com/hook' },
    'Where each event is delivered (optional for webhook triggers).'],
  ['http_method', 'HTTP method', TYPES, { options: METHODS }, null],
  ['cron', 'Cron expression', ['cron_scheduled'], { placeholder: '*/5 * * * *', spellcheck: 'false' },
    '5 fields (minute hour day month weekday), or 6 with leading seconds.'],
  ['interval_seconds', 'Interval (seconds)', ['interval_scheduled'], { type: 'number', min: '1', step: 'any' }, null],
  ['start_at', 'First run at', ['interval_scheduled'], { placeholder: '2026-01-31T12:00:00Z' }, 'Optional, ISO 8601.'],
  ['run_at', 'Run at', ['time_scheduled'], { placeholder: '2026-01-31T12:00:00Z' }, 'ISO 8601; or give “Run in”.'],
  ['run_in', 'Run in', ['time_scheduled'], { placeholder: '10m' }, 'A duration such as 90s, 10m, 2h.'],
  ['timezone', 'Time zone', ['cron_scheduled', 'time_scheduled'], { placeholder: 'UTC', spellcheck: 'false' }, 'IANA name, e.g. Europe/Paris.'],
];
const SIMPLE_KEYS = new Set(SIMPLE.map(([key]) => key));
const PREVIEW_COUNT = 5;

function fieldId(path) {
  return `f-${path.replace(/[^a-z0-9]+/gi, '-')}`;
}

// One labelled control with its help and error line; `path` is the API's field name.
function field(path, label, control, help) {
  const id = fieldId(path);
  control.id = id;
  const errorId = `${id}-error`;
  const helpId = help ? `${id}-help` : null;
  control.setAttribute('aria-describedby', [helpId, errorId].filter(Boolean).join(' '));
  return h('div', { class: 'field', 'data-field': path },
    h('label', { for: id }, label), control,
    help ? h('p', { class: 'help', id: helpId }, help) : null,
    h('p', { class: 'field-error', id: errorId, hidden: true }));
}

function select(values, value) {
  return h('select', null, values.map((v) => h('option', { value: v, selected: v === value }, v)));
}

// One `key=value` a line. The value is kept exactly as typed after the separator (spaces
// included): the API stores it as given, and an edit saved unchanged must not alter it.
function parseLabels(text) {
  const labels = {};
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) continue;
    const at = line.search(/[=:]/);
    if (at < 0) labels[line.trim()] = '';
    else labels[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return labels;
}

// What a schedule needs before its runs can be previewed, by type.
const SCHEDULE_KEYS = {
  cron_scheduled: ['cron'], interval_scheduled: ['interval_seconds'], time_scheduled: ['run_at', 'run_in'],
};

export async function triggerForm(ctx, triggerId) {
  if (access.readOnly) {
    ctx.main.append(h('h1', null, 'Read-only'), h('p', null, 'This API key may only read; triggers cannot be changed with it.'));
    return;
  }
  const editing = triggerId !== null;
  const trigger = editing ? await api('GET', `api/v1/triggers/${encodeURIComponent(triggerId)}`) : null;
  const config = { ...(trigger ? trigger.config : {}) };
  const rest = Object.fromEntries(Object.entries(config).filter(([key]) => !SIMPLE_KEYS.has(key)));
  const hasLabels = trigger ? 'labels' in trigger : false;

  const name = h('input', { type: 'text', required: true, maxlength: '255', value: trigger ? trigger.name : '', autocomplete: 'off' });
  const type = select(TYPES, trigger ? trigger.type : 'cron_scheduled');
  if (editing) type.disabled = true;
  const status = select(STATUSES, trigger ? trigger.status : 'active');
  const simple = new Map();
  const simpleFields = SIMPLE.map(([key, label, types, attrs, help]) => {
    const value = config[key] === undefined || config[key] === null ? '' : String(config[key]);
    const control = attrs.options
      ? select(attrs.options, value || attrs.options[0])
      : h('input', { type: 'text', ...attrs, value, autocomplete: 'off' });
    simple.set(key, control);
    const wrapper = field(`config.${key}`, label, control, help);
    wrapper.dataset.types = types.join(' ');
    return wrapper;
  });
  const labels = h('textarea', { rows: '3', spellcheck: 'false' });
  labels.value = Object.entries(trigger ? trigger.labels || {} : {}).map(([k, v]) => `${k}=${v}`).join('\n');
  const shownLabels = labels.value;
  const extra = h('textarea', { rows: '8', spellcheck: 'false', class: 'code' });
  extra.value = json(rest);

  const summary = h('div', { class: 'form-summary', role: 'alert' });
  const preview = h('div', { class: 'preview-body' }, h('p', { class: 'muted' }, 'Fill in the schedule to see its next runs.'));
  const form = h('form', { class: 'trigger-form', novalidate: true },
    summary,
    h('div', { class: 'form-grid' },
      field('name', 'Name', name, null),
      field('type', 'Type', type, editing ? 'The type of a trigger cannot change.' : null),
      field('status', 'Status', status, null),
      simpleFields,
      field('labels', 'Labels', labels, 'One key=value a line, e.g. team=payments.'),
      field('config', 'Other config (JSON)', extra, 'payload, headers, retry, timeout_seconds, schema, secret… Secrets show as *** and are kept when left so.')),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, editing ? 'Save changes' : 'Create trigger'),
      h('a', { href: editing ? `#/triggers/${encodeURIComponent(triggerId)}` : '#/triggers', class: 'button-link' }, 'Cancel')));

  function showTypeFields() {
    for (const wrapper of simpleFields) {
      wrapper.hidden = !wrapper.dataset.types.split(' ').includes(type.value);
    }
  }
  showTypeFields();

  // The request body, or throws an ApiError-shaped local error naming the field.
  function body() {
    let configBody;
    try {
      configBody = extra.value.trim() ? JSON.parse(extra.value) : {};
    } catch (error) {
      throw localError('config', `not valid JSON: ${error.message}`);
    }
    if (!configBody || typeof configBody !== 'object' || Array.isArray(configBody)) {
      throw localError('config', 'must be a JSON object');
    }
    for (const [key, , types] of SIMPLE) {
      const raw = simple.get(key).value.trim();
      if (!types.includes(type.value) || raw === '') continue;
      // A number goes as a JSON number (1.5 too); anything else as typed, for the API's 400.
      const number = key === 'interval_seconds' && /^\d+(\.\d+)?$/.test(raw);
      configBody[key] = number ? Number(raw) : raw;
    }
    const result = { name: name.value, status: status.value, config: configBody };
    if (!editing) result.type = type.value;
    // Labels left as they were are not sent: the stored set stays exactly as it is (a
    // value holding a line break has no one-line form to read back from the box).
    if (editing && labels.value === shownLabels) return result;
    const labelSet = parseLabels(labels.value);
    if (hasLabels || Object.keys(labelSet).length) result.labels = labelSet;
    return result;
  }

  function clearErrors() {
    clear(summary);
    for (const wrapper of form.querySelectorAll('[data-field]')) {
      const error = wrapper.querySelector('.field-error');
      error.hidden = true;
      error.textContent = '';
      wrapper.classList.remove('invalid');
      wrapper.querySelector('input, select, textarea').removeAttribute('aria-invalid');
    }
  }

  // Show an error at the field the API named, or its nearest shown parent (config.retry.x → config).
  function showError(error) {
    clear(summary, errorBox(error));
    let path = error.field || '';
    let wrapper = null;
    while (path) {
      wrapper = [...form.querySelectorAll('[data-field]')].find((w) => w.dataset.field === path && !w.hidden);
      if (wrapper) break;
      path = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
    }
    if (!wrapper && error.field && error.field.startsWith('config')) {
      wrapper = form.querySelector('[data-field="config"]');
    }
    if (!wrapper) return;
    const message = wrapper.querySelector('.field-error');
    message.textContent = error.message;
    message.hidden = false;
    wrapper.classList.add('invalid');
    const control = wrapper.querySelector('input, select, textarea');
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }

  let previewTimer = 0;
  let previewSeq = 0;
  let previewGone = false;
  async function refreshPreview() {
    if (previewGone || !ctx.live()) return;
    if (type.value === 'webhook') {
      clear(preview, h('p', { class: 'muted' }, 'Webhook triggers fire when called: nothing is scheduled.'));
      return;
    }
    let draft;
    try {
      draft = body();
    } catch (error) {
      clear(preview, h('p', { class: 'muted' }, `Not valid yet: ${error.message}`));
      return;
    }
    // Nothing to ask before the schedule is typed (the answer would be a 400); an endpoint
    // not typed yet does not matter to the runs, and the save reports it at its field.
    if (!(SCHEDULE_KEYS[type.value] || []).some((key) => key in draft.config)) {
      clear(preview, h('p', { class: 'muted' }, 'Fill in the schedule to see its next runs.'));
      return;
    }
    const config = { endpoint: 'https://example.com/', ...draft.config };
    const seq = ++previewSeq;
    try {
      const answer = await api('POST', 'api/v1/triggers/preview', {
        body: { name: draft.name || 'preview', type: type.value, config, count: PREVIEW_COUNT },
      });
      if (seq !== previewSeq) return;
      const runs = answer.occurrences || [];
      clear(preview, runs.length
        ? h('ol', { class: 'runs' }, runs.map((r) => h('li', null, occurrence(r))))
        : h('p', { class: 'muted' }, 'No upcoming runs.'));
    } catch (error) {
      if (seq !== previewSeq) return;
      // 404, or 405 where /triggers/{id} takes the path: this daemon has no preview route
      if (error.status === 404 || error.status === 405) {
        previewGone = true;
        clear(preview, h('p', { class: 'muted unavailable' }, 'Preview unavailable on this daemon.'));
      } else {
        clear(preview, h('p', { class: 'muted' }, `Not valid yet: ${error.message}`));
      }
    }
  }
  function schedulePreview() {
    window.clearTimeout(previewTimer);
    previewTimer = window.setTimeout(refreshPreview, 350);
  }
  ctx.onLeave(() => window.clearTimeout(previewTimer));
  form.addEventListener('input', schedulePreview);
  type.addEventListener('change', () => { showTypeFields(); schedulePreview(); });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const saved = editing
        ? await api('PUT', `api/v1/triggers/${encodeURIComponent(triggerId)}`, { body: body() })
        : await api('POST', 'api/v1/triggers', { body: body() });
      toast(editing ? 'Trigger saved.' : 'Trigger created.', 'ok');
      window.location.hash = `#/triggers/${encodeURIComponent(saved.id)}`;
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });

  ctx.main.append(
    h('h1', { class: 'break' }, editing ? `Edit ${trigger.name}` : 'New trigger'),
    h('div', { class: 'form-layout' }, form,
      h('aside', { class: 'panel preview', 'aria-labelledby': 'preview-title' },
        h('h2', { id: 'preview-title' }, 'Next runs'),
        h('div', { 'aria-live': 'polite' }, preview))),
  );
  schedulePreview();
}

function localError(path, message) {
  return new ApiError(400, { error: { code: 'validation_error', message: `${path}: ${message}`, details: { field: path } } });
}
