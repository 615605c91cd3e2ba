// Live events: every committed change and every emit as it happens (the server's
// `/1/admin/events` stream, read with fetch so the credentials travel in a header, not
// the URL), filterable by object, event and user; and for one event, who received it
// and why each other connected socket did not.
import { api, clear, h, show, message, time, signedOut } from './ui.js';

const KEEP = 500;

export function render(root, timers) {
  const filters = {
    object: h('input', { placeholder: 'object', id: 'filter-object' }),
    event: h('input', { placeholder: 'event', id: 'filter-event' }),
    user: h('input', { placeholder: 'user', id: 'filter-user' }),
  };
  const state = h('span', { class: 'muted status', id: 'stream-state' }, 'connecting…');
  const body = h('tbody', { id: 'events' });
  const trace = h('div', { id: 'trace' }, h('p', { class: 'muted' }, 'Pick an event to see who received it and why the others did not.'));
  const events = [];
  const matches = (e) => ['object', 'event'].every((k) => !filters[k].value || String(e[k] ?? '').includes(filters[k].value))
    && (!filters.user.value || String(e.by?.username ?? '').includes(filters.user.value));
  const redraw = () => clear(body, events.filter(matches).slice(-KEEP).reverse().map(row));
  for (const f of Object.values(filters)) f.addEventListener('input', redraw);

  function row(e) {
    if (e.kind === 'lagged') return h('tr', {}, h('td', { colspan: 7, class: 'error' }, `${e.dropped} events were dropped: this page fell behind`));
    return h('tr', { class: 'pick', 'data-event-id': e.id, 'data-event': e.event, onclick: (ev) => {
      for (const tr of body.children) tr.classList.toggle('on', tr === ev.currentTarget);
      showTrace(e, trace);
    } },
    h('td', {}, time(e.at)), h('td', {}, h('span', { class: 'tag' }, e.kind)), h('td', {}, e.event),
    h('td', {}, e.object ? `${e.object}${e.rowId !== null && e.rowId !== undefined ? ` #${e.rowId}` : ''}${e.verb ? ` ${e.verb}` : ''}` : ''),
    h('td', {}, e.target ?? ''), h('td', {}, e.by ? `${e.by.username} (${e.by.role})` : ''),
    h('td', {}, show(e.recipients)));
  }

  const abort = timers.abortable();
  let lastId = null;
  const onEvent = (e) => {
    if (e.kind === 'ended') throw new Ended(e.reason || 'the stream ended');
    if (typeof e.id === 'number') {
      // A reconnect resumes after this id, so nothing is shown twice.
      if (lastId !== null && e.id <= lastId) return;
      lastId = e.id;
    }
    events.push(e);
    if (events.length > 4 * KEEP) events.splice(0, events.length - KEEP);
    if (matches(e)) {
      body.prepend(row(e));
      while (body.children.length > KEEP) body.lastChild.remove();
    }
  };
  (async () => {
    for (let attempt = 0; !abort.signal.aborted; attempt++) {
      try {
        await stream(abort.signal, lastId, onEvent, (text) => { state.textContent = text; attempt = 0; });
      } catch (e) {
        if (abort.signal.aborted) return;
        if (e instanceof Ended) {
          signedOut(`The live stream ended: ${e.message}. Sign in again.`);
          return;
        }
        state.textContent = `disconnected: ${message(e)}; retrying`;
      }
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * (attempt + 1))));
    }
  })();

  root.append(h('div', { class: 'row' },
    h('div', { class: 'grow card' }, h('div', { class: 'toolbar' }, h('h2', { style: 'margin:0' }, 'Live events'), filters.object, filters.event, filters.user, state),
      h('p', { class: 'muted status' }, 'Events are recorded while a live page is open (the last 500 are shown on opening it); keep this tab open while you test in another.'),
      h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, ['time', 'kind', 'event', 'row', 'to', 'by', 'received'].map((t) => h('th', {}, t)))), body))),
    h('div', { class: 'card live-side' }, trace)));
}

/** The server ended the stream for good (credentials revoked or expired). */
class Ended extends Error {}

/** Reads the event stream until it ends; each `data:` block is one JSON event. */
async function stream(signal, lastId, onEvent, onState) {
  const headers = lastId === null ? {} : { 'Last-Event-ID': String(lastId) };
  const response = await api('GET', '/1/admin/events', undefined, { raw: true, signal, headers });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const text = body.Message || `HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) throw new Ended(text);
    throw new Error(text);
  }
  onState('live');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('the stream ended');
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      let event;
      try { event = JSON.parse(data); } catch { continue; /* a malformed message is skipped */ }
      onEvent(event);
    }
  }
}

let latestTrace = 0;

async function showTrace(event, root) {
  const mine = ++latestTrace;
  const current = () => mine === latestTrace;
  clear(root, h('h2', {}, `${event.event}`), h('p', { class: 'muted' }, 'Loading the delivery trace…'));
  let trace;
  try {
    trace = await api('GET', `/1/admin/events/${event.id}/trace`);
  } catch (e) {
    if (current()) clear(root, h('h2', {}, event.event), h('p', { class: 'error' }, message(e)));
    return;
  }
  // A slower answer for an event picked earlier must not replace this one.
  if (!current()) return;
  const sockets = trace.sockets || [];
  const got = sockets.filter((s) => s.received).length;
  const notes = [];
  if (trace.totalRows > sockets.length) notes.push(`The first ${sockets.length} of ${trace.totalRows} sockets are listed.`);
  if (trace.recipientsTruncated) notes.push('More sockets received it than were recorded; the count is exact, the list is not.');
  if (trace.recipientsDisconnected) notes.push(`${trace.recipientsDisconnected} sockets that received it have disconnected since.`);
  clear(root,
    h('h2', {}, `${event.event} · ${event.kind}`),
    h('dl', { class: 'kv' },
      h('dt', {}, 'to'), h('dd', {}, event.target ?? ''),
      h('dt', {}, 'rooms'), h('dd', {}, (event.rooms || []).map((r) => h('span', { class: 'tag' }, r))),
      event.seq ? [h('dt', {}, 'seq'), h('dd', {}, String(event.seq))] : null,
      h('dt', {}, 'received'), h('dd', {}, `by ${plural(event.recipients ?? got, 'socket')}; ${got} of the ${plural(trace.totalRows ?? sockets.length, 'socket')} connected now`)),
    notes.map((n) => h('p', { class: 'muted status' }, n)),
    h('p', { class: 'muted status' }, `Who received it was recorded when it was sent; why the others did not is worked out now (${time(trace.computedAt)}) from their identity and rooms.`),
    h('table', { id: 'trace-sockets' }, h('tr', {}, ['socket', 'user', 'role', '', 'why'].map((t) => h('th', {}, t))),
      sockets.map((s) => h('tr', { 'data-socket': s.id, 'data-received': String(s.received) },
        h('td', { class: 'cell' }, s.id), h('td', {}, s.username ?? '—'), h('td', {}, s.role ?? '—'),
        h('td', {}, h('span', { class: s.received ? 'tag good' : 'tag bad' }, s.received ? 'received' : 'not received')),
        h('td', {}, s.reason ?? '')))),
    h('h3', {}, 'Payload'), h('pre', {}, JSON.stringify(event.data, null, 2)));
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
