// Health: the key `/metrics` figures as small live charts, sampled every two seconds
// while the page is open (rates are differences between two samples).
import { api, h, message } from './ui.js';

const SAMPLES = 90;
const SVG = 'http://www.w3.org/2000/svg';

const CHARTS = [
  { id: 'connections', title: 'Connected sockets', unit: '', value: (m) => sum(m, 'livebase_socket_connections') },
  { id: 'emits', title: 'Emits / s', unit: '/s', rate: (m) => sum(m, 'livebase_socket_emits_total') },
  { id: 'writes', title: 'Writes / s', unit: '/s', rate: (m) => sum(m, 'livebase_record_writes_total') },
  { id: 'requests', title: 'HTTP requests / s', unit: '/s', rate: (m) => sum(m, 'livebase_http_requests_total') },
  { id: 'latency', title: 'Request latency (mean)', unit: 'ms', ratio: (m) => [sum(m, 'livebase_http_request_duration_seconds_sum') * 1000, sum(m, 'livebase_http_request_duration_seconds_count')] },
  { id: 'drops', title: 'Dropped / cut sockets / s', unit: '/s', rate: (m) => sum(m, 'livebase_socket_drops_total') + sum(m, 'livebase_socket_over_budget_disconnects_total') + sum(m, 'livebase_connections_cut_total') },
  { id: 'limits', title: 'Action limit hits / s', unit: '/s', rate: (m) => sum(m, 'livebase_action_limit_hits_total') },
  { id: 'pool', title: 'Database connections in use', unit: '', value: (m) => sum(m, 'livebase_db_pool_connections') - sum(m, 'livebase_db_pool_idle_connections') },
];

export function render(root, timers) {
  const note = h('p', { class: 'muted status' }, 'Sampling /metrics every 2 s.');
  const grid = h('div', { class: 'charts', id: 'charts' });
  const charts = CHARTS.map((c) => ({ ...c, points: [], value: c.value, view: chart(c) }));
  for (const c of charts) grid.append(c.view.el);
  root.append(h('div', { class: 'card' }, h('h2', {}, 'Health'), note), grid);
  let last = null;
  const sample = async () => {
    let text;
    try {
      const response = await api('GET', '/metrics', undefined, { raw: true });
      text = await response.text();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
    } catch (e) {
      note.textContent = `metrics unavailable: ${message(e)}`;
      return;
    }
    const now = { at: performance.now(), metrics: parse(text) };
    for (const c of charts) {
      let v = null;
      if (c.value) v = c.value(now.metrics);
      else if (last && c.rate) v = Math.max(0, (c.rate(now.metrics) - c.rate(last.metrics)) / ((now.at - last.at) / 1000));
      else if (last && c.ratio) {
        const [a1, b1] = c.ratio(now.metrics); const [a0, b0] = c.ratio(last.metrics);
        v = b1 - b0 > 0 ? (a1 - a0) / (b1 - b0) : 0;
      }
      if (v === null) continue;
      c.points.push(v);
      if (c.points.length > SAMPLES) c.points.shift();
      c.view.draw(c.points, c.unit);
    }
    last = now;
    note.textContent = `Sampling /metrics every 2 s · last ${new Date().toLocaleTimeString()}`;
  };
  sample();
  timers.every(2000, sample);
}

/** Prometheus text → [{name, labels, value}]. */
function parse(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    // Label values may hold `}` (routes such as `/1/objects/{object}`): quoted strings
    // are skipped whole.
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)/);
    if (m) out.push({ name: m[1], labels: m[2] || '', value: Number(m[3]) });
  }
  return out;
}

function sum(metrics, name) {
  return metrics.filter((m) => m.name === name && Number.isFinite(m.value)).reduce((a, m) => a + m.value, 0);
}

function chart(c) {
  const value = h('div', { class: 'value', 'data-chart-value': c.id }, '—');
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 100 70');
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('vector-effect', 'non-scaling-stroke');
  svg.append(line);
  const scale = h('div', { class: 'muted status' });
  const el = h('div', { class: 'card chart', 'data-chart': c.id }, h('div', { class: 'muted' }, c.title), value, svg, scale);
  return {
    el,
    draw(points, unit) {
      const max = Math.max(1e-9, ...points);
      const latest = points[points.length - 1];
      value.textContent = `${format(latest)}${unit ? ` ${unit}` : ''}`;
      scale.textContent = `max ${format(Math.max(...points))} over the last ${points.length * 2} s`;
      // Spread over the width from the first sample on, filling up to SAMPLES.
      const step = 100 / Math.max(points.length - 1, 1);
      line.setAttribute('points', points.map((p, i) => `${i * step},${68 - (p / max) * 64}`).join(' '));
    },
  };
}

function format(v) {
  if (!Number.isFinite(v)) return '—';
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
