// Small helpers every page uses: building DOM nodes (text only: rows are other
// people's input and this page holds an Admin token, so nothing is ever parsed as
// HTML), calling the REST API with the signed-in credentials, and reading errors.

/** h('div', {class: 'x', onclick: f}, 'text', child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A value as one line of text for a table cell. */
export function show(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

const KEY = 'livebase.dashboard.auth';

export const session = {
  get authorization() { return sessionStorage.getItem(KEY); },
  set(authorization) { sessionStorage.setItem(KEY, authorization); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** An API failure: the server's `Message`, its status, and the whole body. */
export class ApiFailure extends Error {
  constructor(status, body) {
    super(body && typeof body === 'object' && body.Message ? body.Message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(f) { onSignedOut = f; }
/** Ends the dashboard session (credentials refused, revoked or expired). */
export function signedOut(note) { onSignedOut(note); }

/**
 * Calls the API as the signed-in operator; resolves with the parsed body, or with the
 * response itself when `raw` (a stream, `/metrics`), whose status is then the caller's.
 */
export async function api(method, path, body, { raw = false, signal, headers: extra = {} } = {}) {
  const headers = { ...extra, Authorization: session.authorization || '' };
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (raw) return response;
  const text = await response.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (response.status === 401) {
    onSignedOut('Your session ended: sign in again.');
  }
  if (!response.ok) throw new ApiFailure(response.status, parsed);
  return parsed;
}

/** GET with a query string built from `params` (values that are objects as JSON). */
export function query(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, typeof v === 'object' ? JSON.stringify(v) : String(v));
  }
  const s = q.toString();
  return api('GET', s ? `${path}?${s}` : path);
}

export function message(e) {
  return e instanceof ApiFailure ? e.message : `${e && e.message ? e.message : e}`;
}

/** A live view's timers, stopped when the operator leaves the page. */
export class Timers {
  constructor() { this.ids = []; this.aborts = []; this.closed = false; }
  /** Runs `f` every `ms`, never twice at once (a slow call is not overlapped). */
  every(ms, f) {
    if (this.closed) return;
    let busy = false;
    this.ids.push(setInterval(async () => {
      if (busy) return;
      busy = true;
      try { await f(); } finally { busy = false; }
    }, ms));
  }
  abortable() {
    const a = new AbortController();
    if (this.closed) a.abort(); else this.aborts.push(a);
    return a;
  }
  /** Stops what runs now; the page may start more. */
  stop() { this.ids.forEach(clearInterval); this.aborts.forEach((a) => a.abort()); this.ids = []; this.aborts = []; }
  /** The page was left: stops everything, and whatever a late callback starts. */
  close() { this.stop(); this.closed = true; }
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
}
