// Data: every schema object with its fields, permissions and row security, and a
// table of its rows through the REST API (filter, sort, search, paging), with a form
// to create, edit and delete rows that shows the server's validation error next to
// the field it names.
import { api, query, clear, h, show, message } from './ui.js';

const OPERATORS = ['equals', 'notEquals', 'greaterThan', 'greaterThanOrEqualsTo', 'lessThan',
  'lessThanOrEqualsTo', 'startsWith', 'endsWith', 'contains', 'notContains', 'empty', 'notEmpty', 'in'];

export async function render(root) {
  const schema = await api('GET', '/1/admin/schema');
  const side = h('ul', { class: 'list', id: 'objects' });
  const main = h('div', { class: 'grow' });
  root.append(h('div', { class: 'row' }, h('div', { class: 'side card' }, h('h2', {}, 'Objects'), side), main));
  let wanted = '';
  try { wanted = decodeURIComponent(location.hash.split('/')[1] || ''); } catch { /* a malformed link opens the first object */ }
  let first = null;
  for (const object of schema.objects) {
    const li = h('li', { 'data-object': object.name, onclick: () => open(object, li) }, object.name);
    side.append(li);
    if (!first || object.name === wanted) first = [object, li];
  }
  function open(object, li) {
    for (const x of side.children) x.classList.toggle('on', x === li);
    history.replaceState(null, '', `#data/${object.name}`);
    new ObjectView(object, main);
  }
  if (first) open(...first);
}

class ObjectView {
  constructor(object, root) {
    this.object = object;
    this.state = { pageNumber: 1, pageSize: 20, sort: [], filter: [], search: '' };
    this.table = h('div', { class: 'scroll' });
    this.status = h('span', { class: 'muted status' });
    this.form = h('div');
    clear(root, this.describe(), h('div', { class: 'card' }, this.toolbar(), this.table, this.pager()), this.form);
    this.load();
  }

  describe() {
    const o = this.object;
    const p = o.permissions;
    const roles = (list) => (list.length ? list.map((r) => h('span', { class: 'tag' }, r)) : h('span', { class: 'muted' }, 'nobody'));
    return h('div', { class: 'card', id: 'object-info' },
      h('h1', {}, o.name),
      h('dl', { class: 'kv' },
        h('dt', {}, 'row security'), h('dd', {}, h('span', { class: 'tag' }, o.rowSecurity)),
        ...['read', 'create', 'update', 'delete'].flatMap((op) => [h('dt', {}, op), h('dd', {}, roles(p[op]))]),
        o.events.length ? [h('dt', {}, 'events'), h('dd', {}, o.events.join(', '))] : null),
      h('h3', {}, 'Fields'),
      h('table', {},
        h('tr', {}, ['field', 'type', 'required', 'unique', 'default', 'max length'].map((t) => h('th', {}, t))),
        o.fields.map((f) => h('tr', {},
          h('td', {}, f.name),
          h('td', {}, f.object ? `${f.type} → ${f.object}` : f.type),
          h('td', {}, f.required ? 'yes' : ''), h('td', {}, f.unique ? 'yes' : ''),
          h('td', {}, show(f.default)), h('td', {}, show(f.maxLength))))));
  }

  toolbar() {
    const search = h('input', { type: 'search', placeholder: 'search text fields', id: 'search' });
    search.addEventListener('change', () => { this.state.search = search.value; this.state.pageNumber = 1; this.load(); });
    const field = h('select', { id: 'filter-field' }, ['id', ...this.object.fields.map((f) => f.name)].map((n) => h('option', {}, n)));
    const operator = h('select', { id: 'filter-operator' }, OPERATORS.map((n) => h('option', {}, n)));
    const value = h('input', { placeholder: 'value', id: 'filter-value' });
    this.chips = h('span');
    const add = h('button', { class: 'secondary', onclick: () => {
      let v = value.value;
      if (operator.value === 'in') v = v.split(',').map((x) => x.trim());
      else if (v !== '' && !Number.isNaN(Number(v)) && this.isNumeric(field.value)) v = Number(v);
      else if (v === 'true' || v === 'false') v = v === 'true';
      this.state.filter.push({ fieldName: field.value, operator: operator.value, value: v });
      this.state.pageNumber = 1;
      value.value = '';
      this.load();
    } }, 'Add filter');
    return h('div', { class: 'toolbar' }, search, field, operator, value, add, this.chips,
      h('span', { style: 'flex:1' }),
      h('button', { id: 'new-row', onclick: () => this.edit(null) }, 'New row'));
  }

  isNumeric(name) {
    if (name === 'id') return true;
    const f = this.object.fields.find((x) => x.name === name);
    return f && ['int', 'float', 'user', 'ref'].includes(f.type);
  }

  pager() {
    this.pageText = h('span', { class: 'muted' });
    return h('div', { class: 'toolbar', style: 'margin-top:8px' },
      h('button', { class: 'secondary', onclick: () => { if (this.state.pageNumber > 1) { this.state.pageNumber--; this.load(); } } }, 'Previous'),
      this.pageText,
      h('button', { class: 'secondary', onclick: () => { if (this.state.pageNumber < this.pages) { this.state.pageNumber++; this.load(); } } }, 'Next'),
      this.status);
  }

  async load() {
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    clear(this.chips, this.state.filter.map((f, i) => h('span', { class: 'tag' },
      `${f.fieldName} ${f.operator} ${show(f.value)} `,
      h('button', { class: 'link', style: 'color:inherit', title: 'remove', onclick: () => { this.state.filter.splice(i, 1); this.load(); } }, '×'))));
    let page;
    try {
      page = await query(`/1/objects/${encodeURIComponent(this.object.name)}`, {
        pageNumber: this.state.pageNumber, pageSize: this.state.pageSize,
        sort: this.state.sort.length ? this.state.sort : undefined,
        filter: this.state.filter.length ? this.state.filter : undefined,
        search: this.state.search || undefined,
      });
    } catch (e) {
      if (ticket === this.ticket) clear(this.table, h('p', { class: 'error' }, message(e)));
      return;
    }
    // An older, slower answer must not replace a newer one.
    if (ticket !== this.ticket) return;
    this.pages = Math.max(1, Math.ceil(page.totalRows / this.state.pageSize));
    this.pageText.textContent = `page ${this.state.pageNumber} of ${this.pages} · ${page.totalRows} rows`;
    const columns = ['id', ...this.object.fields.map((f) => f.name)];
    const header = h('tr', {}, columns.map((c) => {
      const s = this.state.sort.find((x) => x.fieldName === c);
      return h('th', { class: 'sortable', onclick: () => this.toggleSort(c) }, c, s ? (s.order === 'asc' ? ' ▲' : ' ▼') : '');
    }));
    clear(this.table, h('table', { id: 'rows' }, header, page.data.map((row) =>
      h('tr', { class: 'pick', 'data-id': row.id, onclick: () => this.edit(row) },
        columns.map((c) => h('td', { class: 'cell', title: show(row[c]) }, show(row[c])))))));
    if (!page.data.length) this.table.append(h('p', { class: 'muted' }, 'No rows.'));
  }

  toggleSort(column) {
    const now = this.state.sort.find((x) => x.fieldName === column);
    this.state.sort = [{ fieldName: column, order: now && now.order === 'asc' ? 'desc' : 'asc' }];
    this.load();
  }

  edit(row) {
    const fields = this.object.fields;
    const inputs = {};
    const errors = {};
    const general = h('p', { class: 'error', role: 'alert', id: 'form-error' });
    const extra = this.object.name === 'users' && !row ? [{ name: 'password', type: 'password' }] : [];
    const controls = [...fields, ...extra].map((f) => {
      const input = control(f, row ? row[f.name] : undefined);
      inputs[f.name] = input;
      errors[f.name] = h('span', { class: 'field-error', 'data-error-for': f.name });
      return h('label', {}, `${f.name} (${f.type}${f.required ? ', required' : ''})`, input, errors[f.name]);
    });
    const save = async () => {
      for (const e of Object.values(errors)) e.textContent = '';
      general.textContent = '';
      const body = {};
      try {
        for (const f of [...fields, ...extra]) {
          let v = read(f, inputs[f.name]);
          // Emptied on edit: the field is cleared (sent as null), not left alone.
          if (v === undefined && row && row[f.name] !== null && row[f.name] !== undefined) v = null;
          if (v === undefined) continue;
          if (row && JSON.stringify(v) === JSON.stringify(row[f.name] ?? null)) continue;
          body[f.name] = v;
        }
      } catch (e) {
        errors[e.field].textContent = e.message;
        return;
      }
      const path = `/1/objects/${encodeURIComponent(this.object.name)}`;
      try {
        if (row) await api('PUT', `${path}/${row.id}`, body);
        else await api('POST', `${path}?returnObject=true`, body);
      } catch (e) {
        const text = message(e);
        const named = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]).find((n) => errors[n]);
        if (named) errors[named].textContent = text; else general.textContent = text;
        return;
      }
      clear(this.form);
      this.load();
    };
    const remove = async () => {
      if (!confirm(`Delete row ${row.id} of ${this.object.name}?`)) return;
      try {
        await api('DELETE', `/1/objects/${encodeURIComponent(this.object.name)}/${row.id}`);
      } catch (e) {
        general.textContent = message(e);
        return;
      }
      clear(this.form);
      this.load();
    };
    clear(this.form, h('div', { class: 'card', id: 'row-form' },
      h('h2', {}, row ? `Edit ${this.object.name} ${row.id}` : `New ${this.object.name} row`),
      h('div', { class: 'fields' }, controls), general,
      h('div', { class: 'toolbar' },
        h('button', { id: 'save-row', onclick: save }, row ? 'Save' : 'Create'),
        row ? h('button', { class: 'danger', id: 'delete-row', onclick: remove }, 'Delete') : null,
        h('button', { class: 'secondary', onclick: () => clear(this.form) }, 'Cancel'))));
    this.form.scrollIntoView({ block: 'nearest' });
  }
}

function control(field, value) {
  const attrs = { name: field.name, 'data-field': field.name };
  switch (field.type) {
    case 'text': case 'json':
      return h('textarea', { ...attrs, rows: 3 }, value === undefined || value === null ? '' : (field.type === 'json' ? JSON.stringify(value, null, 2) : value));
    case 'bool':
      return h('select', attrs, ['', 'true', 'false'].map((v) =>
        h('option', { value: v, selected: value !== undefined && value !== null && String(value) === v }, v || '(none)')));
    case 'int': case 'float': case 'user': case 'ref':
      return h('input', { ...attrs, type: 'number', step: field.type === 'float' ? 'any' : '1', value: value ?? '' });
    case 'password':
      return h('input', { ...attrs, type: 'password', autocomplete: 'new-password' });
    default:
      return h('input', { ...attrs, value: value ?? '' });
  }
}

/** The input's value for the API; `undefined` when left empty (the field is not sent). */
function read(field, input) {
  const text = input.value;
  if (text === '') return undefined;
  switch (field.type) {
    case 'int': case 'float': case 'user': case 'ref': return Number(text);
    case 'bool': return text === 'true';
    case 'json':
      try { return JSON.parse(text); } catch (e) {
        throw Object.assign(new Error(`not JSON: ${e.message}`), { field: field.name });
      }
    default: return text;
  }
}
