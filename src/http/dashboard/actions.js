// Actions: the list by object and trigger, an editor that checks the code as it is
// typed (compile errors at their line and column, before saving), every saved version
// with a diff and a one-click rollback, running an on-demand action as a chosen
// identity (result, console lines, emits, duration), and the action's log, live.
import { api, query, clear, h, show, message, time } from './ui.js';

const TRIGGERS = ['beforeCreate', 'afterCreate', 'beforeUpdate', 'afterUpdate', 'beforeDelete', 'afterDelete', 'onDemand'];
const TEMPLATE = `function backandCallback(userInput, dbRow, parameters, userProfile) {
  // socket.emitRole('event', { id: dbRow.id }, 'Admin');
  return {};
}
`;

export async function render(root, timers) {
  const side = h('div', { class: 'side card' });
  const main = h('div', { class: 'grow' });
  root.append(h('div', { class: 'row' }, side, main));
  const view = { side, main, timers, selected: null };
  await list(view);
  const wanted = Number(location.hash.split('/')[1]);
  if (wanted) open(view, wanted);
  else main.append(h('div', { class: 'card muted' }, 'Pick an action on the left, or create one.'));
}

async function list(view) {
  const [page, schema] = await Promise.all([
    query('/1/action/config', { pageSize: 1000 }),
    api('GET', '/1/admin/schema'),
  ]);
  view.objects = ['general', ...schema.objects.map((o) => o.name)];
  const byObject = new Map();
  for (const a of page.data) {
    if (!byObject.has(a.object)) byObject.set(a.object, []);
    byObject.get(a.object).push(a);
  }
  const ul = h('ul', { class: 'list', id: 'action-list' });
  for (const [object, actions] of [...byObject].sort(([a], [b]) => a.localeCompare(b))) {
    ul.append(h('li', { class: 'group' }, object));
    actions.sort((a, b) => TRIGGERS.indexOf(a.trigger) - TRIGGERS.indexOf(b.trigger) || a.name.localeCompare(b.name));
    for (const a of actions) {
      ul.append(h('li', { 'data-action': `${a.object}/${a.trigger}/${a.name}`, class: a.id === view.selected ? 'on' : '',
        onclick: () => open(view, a.id) }, `${a.trigger} · ${a.name}`, h('span', { class: 'muted' }, ` v${a.version}`)));
    }
  }
  clear(view.side, h('h2', {}, 'Actions'),
    h('button', { id: 'new-action', onclick: () => create(view) }, 'New action'),
    page.data.length ? ul : h('p', { class: 'muted' }, 'No actions yet.'));
}

function create(view) {
  view.timers.stop();
  view.selected = null;
  const name = h('input', { name: 'name', placeholder: 'name', id: 'new-name' });
  const object = h('select', { name: 'object', id: 'new-object' }, view.objects.map((o) => h('option', {}, o)));
  const trigger = h('select', { name: 'trigger', id: 'new-trigger' }, TRIGGERS.map((t) => h('option', { selected: t === 'onDemand' }, t)));
  const editor = new Editor(TEMPLATE);
  const error = h('p', { class: 'error', role: 'alert', id: 'save-error' });
  const save = async () => {
    error.textContent = '';
    try {
      const saved = await api('POST', '/1/action/config', {
        name: name.value, object: object.value, trigger: trigger.value, code: editor.code,
      });
      await list(view);
      open(view, saved.id);
    } catch (e) {
      if (e.body?.line) editor.mark(e.body);
      error.textContent = e.body?.line ? `Not saved: ${message(e)}` : message(e);
    }
  };
  clear(view.main, h('div', { class: 'card' }, h('h1', {}, 'New action'),
    h('div', { class: 'toolbar' }, object, trigger, name), editor.el, editor.status, error,
    h('div', { class: 'toolbar' }, h('button', { id: 'save-action', onclick: save }, 'Save'))));
  editor.check();
}

async function open(view, id) {
  view.timers.stop();
  view.selected = id;
  for (const li of view.side.querySelectorAll('li[data-action]')) li.classList.remove('on');
  let action;
  try {
    action = await api('GET', `/1/action/config/${id}`);
  } catch (e) {
    if (view.selected === id) clear(view.main, h('p', { class: 'error' }, message(e)));
    return;
  }
  // Another action (or another page) was opened meanwhile.
  if (view.selected !== id || view.timers.closed) return;
  view.side.querySelector(`li[data-action="${CSS.escape(`${action.object}/${action.trigger}/${action.name}`)}"]`)?.classList.add('on');
  history.replaceState(null, '', `#actions/${id}`);
  const editor = new Editor(action.code);
  const error = h('p', { class: 'error', role: 'alert', id: 'save-error' });
  const title = h('h1', {}, `${action.object} / ${action.trigger} / ${action.name}`);
  const version = h('span', { class: 'tag', id: 'action-version' }, `version ${action.version}`);
  const versions = h('div', { id: 'versions' });
  const save = async () => {
    error.textContent = '';
    try {
      // With the version it was loaded at: another operator's save in between is a
      // 409 instead of being overwritten.
      action = await api('PUT', `/1/action/config/${id}`, { code: editor.code, version: action.version });
      version.textContent = `version ${action.version}`;
      editor.saved(action.code);
      loadVersions(view, action, versions, editor, version);
      list(view);
    } catch (e) {
      if (e.body?.line) editor.mark(e.body);
      error.textContent = e.body?.line ? `Not saved: ${message(e)}` : message(e);
    }
  };
  const remove = async () => {
    if (!confirm(`Delete the action ${action.name}? Its versions go with it.`)) return;
    try { await api('DELETE', `/1/action/config/${id}`); } catch (e) { error.textContent = message(e); return; }
    view.timers.stop();
    view.selected = null;
    clear(view.main);
    list(view);
  };
  const fromFile = action.file
    ? h('p', { class: 'status', id: 'from-file' }, `This action comes from ${action.file} in the actions directory: a change of that file, or a restart with a different file, replaces what you save here.`)
    : null;
  const parts = [
    h('div', { class: 'card' }, h('div', { class: 'toolbar' }, title, version), fromFile, editor.el, editor.status, error,
      h('div', { class: 'toolbar' },
        h('button', { id: 'save-action', onclick: save }, 'Save'),
        h('button', { class: 'danger', onclick: remove }, 'Delete'))),
  ];
  if (action.trigger === 'onDemand') parts.push(runPanel(action));
  parts.push(h('div', { class: 'card' }, h('h2', {}, 'Versions'), versions));
  parts.push(logPanel(view, action));
  clear(view.main, parts);
  editor.check();
  loadVersions(view, action, versions, editor, version);
}

/** A code editor: a textarea with line numbers, checked by the server as it changes. */
class Editor {
  constructor(code) {
    this.gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
    this.area = h('textarea', { class: 'code', spellcheck: 'false', id: 'code', 'aria-label': 'action code' }, code);
    this.status = h('p', { class: 'status', id: 'compile-status' });
    this.el = h('div', { class: 'editor' }, this.gutter, this.area);
    this.savedCode = code;
    this.badLine = null;
    let timer = null;
    this.area.addEventListener('input', () => {
      this.numbers();
      clearTimeout(timer);
      timer = setTimeout(() => this.check(), 400);
    });
    this.area.addEventListener('scroll', () => { this.gutter.scrollTop = this.area.scrollTop; });
    this.area.addEventListener('keydown', (e) => {
      if (e.key === 'Tab') {
        e.preventDefault();
        this.area.setRangeText('  ', this.area.selectionStart, this.area.selectionEnd, 'end');
      }
    });
    this.numbers();
  }

  get code() { return this.area.value; }

  saved(code) { this.savedCode = code; this.area.value = code; this.numbers(); this.check(); }

  numbers() {
    const count = this.area.value.split('\n').length;
    clear(this.gutter, Array.from({ length: count }, (_, i) =>
      h('div', { class: i + 1 === this.badLine ? 'bad' : '' }, String(i + 1))));
  }

  /** Shows a compile error `{Message, line, column}` (or clears it). */
  mark(error) {
    this.badLine = error && error.line ? error.line : null;
    this.numbers();
    if (!error) {
      this.status.className = 'status ok';
      this.status.textContent = 'Compiles.';
      return;
    }
    this.status.className = 'status error';
    // The server's message already names the line and column.
    this.status.textContent = error.Message || String(error);
  }

  async check() {
    const code = this.code;
    try {
      await api('POST', '/1/action/config/compile', { code });
      if (code === this.code) this.mark(null);
    } catch (e) {
      if (code === this.code) this.mark(e.body && typeof e.body === 'object' ? e.body : { Message: message(e) });
    }
  }
}

async function loadVersions(view, action, root, editor, versionTag) {
  let page;
  try {
    page = await query(`/1/action/config/${action.id}/versions`, { pageSize: 100 });
  } catch (e) {
    clear(root, h('p', { class: 'error' }, message(e)));
    return;
  }
  const diff = h('div', { id: 'version-diff' });
  const rows = page.data.map((v) => h('tr', { class: 'pick', 'data-version': v.version, onclick: (ev) => {
    for (const tr of root.querySelectorAll('tr')) tr.classList.toggle('on', tr === ev.currentTarget);
    clear(diff, h('h3', {}, `version ${v.version} → current (version ${action.version})`), renderDiff(v.code, action.code),
      v.version === action.version ? null : h('button', { id: 'rollback', onclick: async () => {
        try {
          const back = await api('POST', `/1/action/config/${action.id}/rollback`, { version: v.version });
          Object.assign(action, back);
          versionTag.textContent = `version ${back.version}`;
          editor.saved(back.code);
          loadVersions(view, action, root, editor, versionTag);
          list(view);
        } catch (e) {
          diff.append(h('p', { class: 'error' }, message(e)));
        }
      } }, `Roll back to version ${v.version}`));
  } }, h('td', {}, `v${v.version}`), h('td', {}, time(v.createdAt)), h('td', {}, h('span', { class: 'tag' }, v.source)),
  h('td', { class: 'cell' }, (v.code.split('\n').find((l) => l.trim()) || '').trim())));
  clear(root, h('table', {}, h('tr', {}, ['version', 'saved', 'how', 'code'].map((t) => h('th', {}, t))), rows), diff);
}

/** A line diff (longest common subsequence), `-` lines struck, `+` lines green. */
function renderDiff(before, after) {
  const a = before.split('\n');
  const b = after.split('\n');
  if (a.length * b.length > 4_000_000) return h('p', { class: 'muted' }, 'Too large to compare here.');
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0; let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { lines.push(h('div', {}, `  ${a[i]}`)); i++; j++; }
    else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) { lines.push(h('div', { class: 'add' }, `+ ${b[j]}`)); j++; }
    else { lines.push(h('div', { class: 'del' }, `- ${a[i]}`)); i++; }
  }
  return h('pre', { class: 'diff' }, lines);
}

function runPanel(action) {
  const parameters = h('textarea', { class: 'code-small', rows: 3, id: 'run-parameters', placeholder: '{"note": "hello"}' }, '{}');
  const rowId = h('input', { type: 'number', placeholder: 'row id (optional)', id: 'run-row' });
  const who = h('select', { id: 'run-as' },
    h('option', { value: 'me' }, 'me (signed-in Admin)'),
    h('option', { value: 'anonymous' }, 'anonymous (Public)'),
    h('option', { value: 'email' }, 'user with email…'));
  const email = h('input', { type: 'email', placeholder: 'user email', id: 'run-email', hidden: true });
  who.addEventListener('change', () => { email.hidden = who.value !== 'email'; });
  const out = h('div', { id: 'run-result' });
  const run = async () => {
    let params;
    try { params = parameters.value.trim() ? JSON.parse(parameters.value) : {}; } catch (e) {
      clear(out, h('p', { class: 'error' }, `parameters are not JSON: ${e.message}`));
      return;
    }
    const body = { object: action.object, name: action.name, parameters: params };
    if (rowId.value) body.id = Number(rowId.value);
    if (who.value === 'anonymous') body.as = { anonymous: true };
    if (who.value === 'email') body.as = { email: email.value };
    clear(out, h('p', { class: 'muted' }, 'Running…'));
    let r;
    try { r = await api('POST', '/1/action/run', body); } catch (e) {
      clear(out, h('p', { class: 'error' }, message(e)));
      return;
    }
    clear(out,
      h('p', { class: r.ok ? 'ok' : 'error', id: 'run-outcome' },
        r.ok ? 'Returned' : `Failed (${r.error?.status ?? ''}): ${r.error?.Message ?? ''}`,
        ` in ${Number(r.durationMs).toFixed(2)} ms`),
      r.ok ? [h('h3', {}, 'Result'), h('pre', { id: 'run-value' }, JSON.stringify(r.result, null, 2))] : null,
      h('h3', {}, `Console (${r.logs.length})`),
      r.logs.length ? h('pre', { id: 'run-logs' }, r.logs.map((l) => `${l.level}: ${l.message}`).join('\n')) : h('p', { class: 'muted' }, 'nothing logged'),
      h('h3', {}, `Emits (${r.emits.length})`),
      r.emits.length ? h('table', { id: 'run-emits' }, h('tr', {}, ['how', 'event', 'to', 'data'].map((t) => h('th', {}, t))),
        r.emits.map((e) => h('tr', {}, h('td', {}, e.kind), h('td', {}, e.event), h('td', {}, show(e.target)), h('td', { class: 'cell' }, show(e.data)))))
        : h('p', { class: 'muted' }, r.ok ? 'no emits' : 'no emits delivered (the call failed)'));
  };
  return h('div', { class: 'card', id: 'run-panel' }, h('h2', {}, 'Run'),
    h('label', {}, 'parameters (JSON)', parameters),
    h('div', { class: 'toolbar' }, action.object === 'general' ? null : rowId, who, email,
      h('button', { id: 'run-action', onclick: run }, 'Run')), out);
}

function logPanel(view, action) {
  const pre = h('pre', { id: 'action-logs' });
  const note = h('p', { class: 'muted' }, 'The last lines this action logged, as they come.');
  let after = null;
  let lines = [];
  const poll = async () => {
    let page;
    try {
      page = await query(`/1/action/config/${action.id}/logs`, after === null ? { last: 100 } : { after });
    } catch (e) {
      note.textContent = message(e);
      return;
    }
    for (const l of page.data) {
      lines.push(`${time(l.at)} ${l.level ?? ''} ${l.message ?? show(l)}`);
      if (typeof l.seq === 'number') after = Math.max(after ?? 0, l.seq);
    }
    if (after === null) after = 0;
    lines = lines.slice(-200);
    pre.textContent = lines.join('\n') || '(nothing yet)';
  };
  poll();
  view.timers.every(2000, poll);
  return h('div', { class: 'card' }, h('h2', {}, 'Log'), note, pre);
}
