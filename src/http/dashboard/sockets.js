// Sockets: every connected socket of this node with its identity, transport, channels,
// age and how far behind it is; an operator can disconnect one.
import { api, query, clear, h, message } from './ui.js';

export function render(root, timers) {
  const body = h('div', { class: 'scroll' });
  const note = h('span', { class: 'muted status' });
  root.append(h('div', { class: 'card' }, h('div', { class: 'toolbar' }, h('h2', { style: 'margin:0' }, 'Connected sockets'), note), body));
  const load = async () => {
    let page;
    try {
      page = await query('/1/admin/sockets', { pageSize: 500 });
    } catch (e) {
      note.textContent = message(e);
      return;
    }
    const shown = page.data.length < page.totalRows ? ` (the first ${page.data.length} shown)` : '';
    // With several nodes each lists its own sockets: say which node answered.
    const node = page.node ? ` to node ${page.node}` : '';
    note.textContent = `${page.totalRows} connected${node}${shown} · refreshed ${new Date().toLocaleTimeString()}`;
    clear(body, h('table', { id: 'sockets' },
      h('tr', {}, ['socket', 'user', 'role', 'transport', 'channels', 'age', 'queued', ''].map((t) => h('th', {}, t))),
      page.data.map((s) => h('tr', { 'data-socket': s.id },
        h('td', { class: 'cell' }, s.id),
        h('td', {}, s.username ?? h('span', { class: 'muted' }, 'not authenticated')),
        h('td', {}, s.role ?? ''),
        h('td', {}, [s.transport, s.bridge ? `via ${s.bridge}` : null, s.protocol].filter(Boolean).join(' · ')),
        h('td', {}, (s.channels || []).map((c) => h('span', { class: 'tag' }, c))),
        h('td', {}, age(s.ageSeconds)),
        h('td', {}, `${s.queuedBytes ?? 0} B`),
        h('td', {}, h('button', { class: 'danger', onclick: async (ev) => {
          ev.target.disabled = true;
          try { await api('DELETE', `/1/admin/sockets/${encodeURIComponent(s.id)}`); } catch (e) { note.textContent = message(e); }
          load();
        } }, 'Disconnect'))))));
  };
  load();
  timers.every(3000, load);
}

function age(seconds) {
  const s = Math.floor(seconds ?? 0);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
