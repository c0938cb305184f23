// The faultline console: the Web API (/api/openapi.json) seen from a browser. Every value
// from the API is written as text (textContent), never as HTML: agent names, labels and
// messages come from whoever could register an agent or apply a fault.
'use strict';

const $ = (s) => document.querySelector(s);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : String(c));
  return e;
}

const state = {
  // Kept for this tab only (sessionStorage), sent as a header: never a cookie.
  token: sessionStorage.getItem('faultline.token') || '',
  kinds: [],
  faults: [],
  faultsAt: 0,
  // Fault id -> {from, to} in unix ms, for the chart's shading.
  intervals: new Map(),
  eventSeq: 0,
  chart: null,
  traffic: null,
};

class ApiError extends Error {
  constructor(status, code, field, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** One call to the Web API; an error answer becomes an ApiError naming the field. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const e = (data && data.error) || {};
    if (r.status === 401) setConn('unauthenticated', 'sign in: ' + (e.message || 'a token is needed'));
    throw new ApiError(r.status, e.code || 'http_' + r.status, e.field || '', e.message || `${r.status} ${r.statusText}`);
  }
  return data;
}

function setConn(s, text) {
  const c = $('#conn');
  c.dataset.state = s;
  c.textContent = text;
}

function when(unixMs) {
  return unixMs ? new Date(unixMs).toLocaleTimeString() : '';
}

// ---- agents ----

async function refreshAgents() {
  const agents = await api('GET', '/api/agents');
  const rows = agents.map((a) => el('tr', { 'data-agent': a.name },
    el('td', {}, a.name),
    el('td', { class: a.healthy ? 'ok' : 'bad', title: a.error }, a.healthy ? 'healthy' : 'down' + (a.error ? ': ' + a.error : '')),
    el('td', {}, a.hostname),
    el('td', {}, a.kernel_release),
    el('td', {}, a.addresses.join(' ')),
    el('td', {}, Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(', ')),
    el('td', { class: 'num' }, a.active_faults)));
  $('#agents tbody').replaceChildren(...rows);
}

// ---- faults ----

async function refreshFaults() {
  state.faults = await api('GET', '/api/faults');
  state.faultsAt = performance.now();
  for (const f of state.faults) {
    if (f.id !== 'done' && !state.intervals.has(f.id)) state.intervals.set(f.id, { from: f.applied_at_unix_ms, to: null });
  }
  drawFaults();
}

function where(f) {
  if (f.cut) return 'cut: ' + f.cut;
  // What it does and where, in the CLI's words (loss 20% on eth0 egress, 256kbit, ...).
  if (f.settings) return f.settings;
  const parts = [];
  if (f.container) parts.push('container ' + f.container);
  if (f.interface) parts.push(f.interface);
  return parts.join(' ') || 'process';
}

/** Seconds a fault has left now: its time left when listed, counted down since. */
function leftOf(f) {
  return Math.max(0, f.seconds_left - (performance.now() - state.faultsAt) / 1000);
}

function drawFaults() {
  const rows = state.faults.map((f) => el('tr', { 'data-fault': f.id, 'data-kind': f.kind },
    el('td', {}, f.id),
    el('td', {}, f.kind),
    el('td', {}, where(f)),
    el('td', {}, f.parts.map((p) => p.agent).join(' ')),
    el('td', {}, f.label),
    el('td', { class: 'num left' }, leftOf(f).toFixed(1) + ' s'),
    el('td', {},
      el('button', { type: 'button', class: 'extend', title: 'Renew its lease: a minute more than it has left', onclick: () => extend(f) }, '+1 min'),
      ' ',
      el('button', { type: 'button', class: 'danger revert', onclick: () => revert(f.id) }, 'Revert'))));
  $('#faults tbody').replaceChildren(...rows);
  $('#faults-empty').hidden = rows.length > 0;
}

/** Between refreshes, only the time left changes. */
function tickCountdown() {
  for (const f of state.faults) {
    const cell = document.querySelector(`tr[data-fault="${CSS.escape(f.id)}"] td.left`);
    if (cell) cell.textContent = leftOf(f).toFixed(1) + ' s';
  }
}

/** Renews a fault's lease to a minute more than it has left (the lease counts from now). */
async function extend(f) {
  const left = leftOf(f);
  try {
    const r = await api('POST', `/api/faults/${encodeURIComponent(f.id)}/renew`, { lease: `${Math.ceil(left + 60)}s` });
    showResult(`${r.id} renewed: ${r.seconds_left.toFixed(0)} s left`, false);
  } catch (e) {
    showResult(`renew: ${e.message}`, true);
  }
  refreshFaults().catch(() => {});
}

async function revert(id) {
  try {
    const r = id === undefined ? await api('DELETE', '/api/faults') : await api('DELETE', '/api/faults/' + encodeURIComponent(id));
    const failed = r.failures.map((f) => `${f.agent}: ${f.error}`).join('; ');
    showResult(failed ? `reverted ${r.reverted.join(' ')}; not reverted now (their lease ends them): ${failed}` : `reverted ${r.reverted.join(' ') || 'nothing'}`, !!failed);
  } catch (e) {
    showResult(`revert: ${e.message}`, true);
  }
  refreshFaults().catch(() => {});
}

// ---- the apply form, built from /api/fault-kinds (the CLI's own flags) ----

const REQUEST_NUMBERS = { count: parseInt, percent: parseFloat };

async function loadKinds() {
  state.kinds = await api('GET', '/api/fault-kinds');
  const select = $('#kind');
  select.replaceChildren(...state.kinds.map((k) => el('option', { value: k.kind }, k.kind)));
  select.value = state.kinds.some((k) => k.kind === 'drop') ? 'drop' : state.kinds[0].kind;
  drawForm();
}

function drawForm() {
  const kind = state.kinds.find((k) => k.kind === $('#kind').value);
  $('#kind-about').textContent = kind.about;
  const groups = new Map();
  for (const s of kind.settings) {
    const heading = s.heading || (s.request_field ? 'Fault' : 'Settings');
    if (!groups.has(heading)) groups.set(heading, []);
    groups.get(heading).push(s);
  }
  const order = ['Settings', 'Container', 'Process target', 'Fault', 'Controller targeting'];
  const names = [...groups.keys()].sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  $('#settings').replaceChildren(...names.map((h) => el('fieldset', {}, el('legend', {}, h), groups.get(h).map(settingInput))));
}

function settingInput(s) {
  const id = 'setting-' + s.name;
  const field = s.request_field ? s.name : 'settings.' + s.name;
  const common = { id, name: s.name, 'data-field': field, 'data-request-field': s.request_field ? 'true' : null, 'data-list': s.list ? 'true' : null };
  let input;
  if (s.switch) {
    input = el('input', { ...common, type: 'checkbox' });
  } else if (s.choices.length) {
    input = el('select', common, el('option', { value: '' }, s.default ? `(${s.default})` : '—'), s.choices.map((c) => el('option', { value: c }, c)));
  } else {
    input = el('input', { ...common, placeholder: s.list ? `${s.value_name}, …` : s.default || s.value_name, size: 16 });
  }
  return el('div', { class: 'setting' },
    el('label', { for: id }, s.name + (s.required ? ' *' : '')),
    input,
    el('small', {}, s.help));
}

function newRequestId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The form as a POST /api/faults request: empty inputs are left out. */
function applyRequest() {
  const req = { kind: $('#kind').value, settings: {}, client_request_id: newRequestId() };
  for (const input of $('#settings').querySelectorAll('[name]')) {
    let v;
    if (input.type === 'checkbox') {
      if (!input.checked) continue;
      v = true;
    } else {
      v = input.value.trim();
      if (!v) continue;
      if (input.dataset.list) v = v.split(',').map((x) => x.trim()).filter(Boolean);
    }
    if (input.dataset.requestField) {
      const n = REQUEST_NUMBERS[input.name];
      req[input.name] = input.name === 'on' ? [].concat(v) : n ? n(v) : Array.isArray(v) ? v.join(',') : v;
    } else {
      req.settings[input.name] = v;
    }
  }
  return req;
}

function markInvalid(form, field) {
  for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
  const bad = field && form.querySelector(`[data-field="${CSS.escape(field)}"]`);
  if (bad) {
    bad.setAttribute('aria-invalid', 'true');
    bad.focus();
  }
}

function showResult(text, bad) {
  const p = $('#apply-result');
  p.textContent = text;
  p.classList.toggle('bad', bad);
}

/** Where the form's fault would act, each agent checking it; nothing is changed. */
async function preview() {
  const form = $('#apply');
  const req = applyRequest();
  delete req.client_request_id;
  try {
    const p = await api('POST', '/api/faults/preview', req);
    markInvalid(form, '');
    const where = p.parts.map((x) => (x.container ? `${x.agent} (container ${x.container})` : x.agent));
    showResult(`will hit ${where.length} agent${where.length === 1 ? '' : 's'}: ${where.join(', ')} — ${p.settings}; nothing applied yet`, false);
  } catch (e) {
    markInvalid(form, e.field);
    showResult(e.status === 403 ? `not allowed: ${e.message}` : e.message, true);
  }
}

async function submitApply(ev) {
  ev.preventDefault();
  const form = $('#apply');
  try {
    const f = await api('POST', '/api/faults', applyRequest());
    markInvalid(form, '');
    showResult(`applied ${f.id} (${f.kind}) on ${f.parts.map((p) => p.agent).join(' ')}`, false);
  } catch (e) {
    markInvalid(form, e.field);
    showResult(e.status === 403 ? `not allowed: ${e.message}` : e.message, true);
  }
  refreshFaults().catch(() => {});
}

// ---- events: Server-Sent Events read with fetch, so the token goes in a header ----

function addEvent(e, live = true) {
  state.eventSeq = Math.max(state.eventSeq, e.seq);
  if (e.fault_id && e.kind === 'fault_applied') state.intervals.set(e.fault_id, { from: e.unix_ms, to: null });
  if (e.fault_id && (e.kind === 'fault_reverted' || e.kind === 'fault_expired')) {
    const i = state.intervals.get(e.fault_id);
    if (i) i.to = e.unix_ms;
  }
  const li = el('li', { value: e.seq, 'data-kind': e.kind },
    el('span', { class: 'muted' }, when(e.unix_ms) + ' '),
    el('span', { class: 'kind' }, e.kind),
    e.fault_id ? ' ' + e.fault_id : '',
    e.agents.length ? ' [' + e.agents.join(' ') + ']' : '',
    e.message ? ' ' + e.message : '');
  const list = $('#events');
  list.prepend(li);
  while (list.children.length > 300) list.lastElementChild.remove();
  if (!live) return;
  if (e.kind.startsWith('fault_')) refreshFaults().catch(() => {});
  if (e.kind.startsWith('agent_')) refreshAgents().catch(() => {});
}

async function followEvents() {
  for (;;) {
    try {
      if (!state.eventSeq) {
        const recent = await api('GET', '/api/events?last=100');
        for (const e of recent) addEvent(e, false);
      }
      const headers = { Accept: 'text/event-stream' };
      if (state.token) headers.Authorization = 'Bearer ' + state.token;
      const url = '/api/events/stream?after_seq=' + state.eventSeq;
      const r = await fetch(url, { headers, cache: 'no-store' });
      if (!r.ok) throw new ApiError(r.status, '', '', `events: ${r.status}`);
      setConn('live', 'live');
      $('#events-state').textContent = 'following';
      await readSse(r.body, (type, data) => {
        if (type === 'event') addEvent(JSON.parse(data));
        else if (type === 'error') $('#events-state').textContent = data;
      });
    } catch (e) {
      if (e.status !== 401) setConn('down', 'controller unreachable: ' + e.message);
    }
    $('#events-state').textContent = 'reconnecting…';
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

/** Calls `on(type, data)` for each event of a text/event-stream body until it ends. */
async function readSse(body, on) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const [k, ...rest] = line.split(':');
        const v = rest.join(':').replace(/^ /, '');
        if (k === 'event') type = v;
        else if (k === 'data') data.push(v);
      }
      if (data.length) on(type, data.join('\n'));
    }
  }
}

// ---- traffic ----

/** Shades the intervals faults were active in, behind the series. */
const faultShading = {
  hooks: {
    drawClear: [(u) => {
      const { ctx, bbox } = u;
      const [min, max] = [u.scales.x.min, u.scales.x.max];
      ctx.save();
      ctx.fillStyle = 'rgba(180, 35, 24, 0.12)';
      for (const i of state.intervals.values()) {
        const from = i.from / 1000;
        const to = (i.to || Date.now()) / 1000;
        if (to < min || from > max) continue;
        const x0 = u.valToPos(Math.max(from, min), 'x', true);
        const x1 = u.valToPos(Math.min(to, max), 'x', true);
        ctx.fillRect(x0, bbox.top, Math.max(1, x1 - x0), bbox.height);
      }
      ctx.restore();
    }],
  },
};

function chartData(t) {
  const start = t.started_unix_ms / 1000;
  const xs = [], ok = [], failed = [], p50 = [], p99 = [];
  for (const s of t.seconds) {
    xs.push(start + s.second);
    ok.push(s.requests - s.errors);
    failed.push(s.errors);
    p50.push(s.p50_ms ?? null);
    p99.push(s.p99_ms ?? null);
  }
  return [xs, ok, failed, p50, p99];
}

function windowOf(t, min, max) {
  if (!t) return [min, max];
  const start = t.started_unix_ms / 1000;
  return [Math.min(start, min), Math.max(start + t.duration_seconds, max)];
}

function drawChart(t) {
  const data = chartData(t);
  const box = $('#chart');
  box.dataset.seconds = t.seconds.length;
  box.dataset.requests = t.seconds.reduce((n, s) => n + s.requests, 0);
  if (!state.chart) {
    state.chart = new uPlot({
      width: Math.max(300, box.clientWidth),
      height: 300,
      plugins: [faultShading],
      // The whole load's window from the start, so the chart fills left to right.
      scales: { x: { time: true, range: (u, min, max) => windowOf(state.traffic, min, max) }, ms: { auto: true } },
      axes: [{}, { label: 'requests/s' }, { scale: 'ms', side: 1, label: 'ms', grid: { show: false } }],
      series: [
        {},
        { label: 'answered/s', stroke: '#0b5cad', width: 2 },
        { label: 'failed/s', stroke: '#b42318', width: 2 },
        { label: 'p50 ms', stroke: '#1a7f37', scale: 'ms' },
        { label: 'p99 ms', stroke: '#9a6700', scale: 'ms', dash: [4, 4] },
      ],
    }, data, box);
  } else {
    state.chart.setData(data);
  }
}

/** Polled every second: the whole history once per load, then only the latest seconds
 * (late answers still change them), merged by second. */
async function refreshTraffic() {
  let t;
  const known = state.traffic;
  try {
    t = await api('GET', known ? '/api/traffic?last=15' : '/api/traffic');
  } catch (e) {
    if (e.status === 404) return;
    throw e;
  }
  if (known && known.id === t.id) {
    const first = t.seconds.length ? t.seconds[0].second : Infinity;
    t.seconds = known.seconds.filter((s) => s.second < first).concat(t.seconds);
  } else if (known && t.seconds.length && t.seconds[0].second > 0) {
    // A new load since the last poll: fetch its whole history next time.
    state.traffic = null;
    return;
  }
  state.traffic = t;
  const answered = t.seconds.reduce((n, s) => n + s.requests, 0);
  const errors = t.seconds.reduce((n, s) => n + s.errors, 0);
  const status = $('#traffic-status');
  status.classList.remove('bad');
  status.textContent = t.running
    ? `load ${t.id} running against ${t.target_url} at ${t.rps}/s: ${t.elapsed_seconds.toFixed(0)} of ${t.duration_seconds} s, ${answered} answered, ${errors} failed`
    : `load ${t.id} against ${t.target_url} ended: ` + (t.summary ? `${t.summary.requests} requests, ${t.summary.errors} failed, p50 ${t.summary.p50_ms.toFixed(2)} ms, p99 ${t.summary.p99_ms.toFixed(2)} ms` : `${answered} answered`);
  drawChart(t);
}

async function submitTraffic(ev) {
  ev.preventDefault();
  const form = $('#traffic-form');
  const v = (n) => form.elements[n].value.trim();
  const req = { target_url: v('target_url'), rps: Number(v('rps')), duration_seconds: Number(v('duration_seconds')) };
  if (v('shape')) req.shape = v('shape');
  try {
    await api('POST', '/api/traffic/start', req);
    markInvalid(form, '');
    await refreshTraffic();
  } catch (e) {
    markInvalid(form, e.field);
    $('#traffic-status').textContent = e.message;
    $('#traffic-status').classList.add('bad');
  }
}

async function stopTraffic() {
  try {
    await api('POST', '/api/traffic/stop');
    await refreshTraffic();
  } catch (e) {
    $('#traffic-status').textContent = e.message;
    $('#traffic-status').classList.add('bad');
  }
}

// ---- runs ----

async function refreshRuns() {
  const runs = await api('GET', '/api/runs');
  const rows = runs.map((r) => el('tr', { 'data-run': r.id, 'data-state': r.state },
    el('td', {}, r.id),
    el('td', { class: r.state === 'passed' ? 'ok' : r.state === 'running' ? '' : 'bad' }, r.state),
    el('td', {}, when(r.started_unix_ms)),
    el('td', {}, r.message),
    el('td', {},
      r.state === 'running' ? el('button', { type: 'button', class: 'danger stop', onclick: () => stopRun(r.id) }, 'Stop') : '',
      r.files.includes('report.html') ? el('button', { type: 'button', class: 'report', onclick: () => openReport(r.id) }, 'Report') : '')));
  $('#runs tbody').replaceChildren(...rows);
}

function runResult(text, bad) {
  const p = $('#run-result');
  p.textContent = text;
  p.classList.toggle('bad', bad);
}

async function submitRun(ev) {
  ev.preventDefault();
  const form = $('#run-form');
  try {
    const r = await api('POST', '/api/runs', { scenario: $('#run-scenario').value });
    markInvalid(form, '');
    runResult(`started ${r.id}`, false);
  } catch (e) {
    markInvalid(form, e.field.startsWith('scenario') ? 'scenario' : e.field);
    runResult(e.message, true);
  }
  refreshRuns().catch(() => {});
}

async function stopRun(id) {
  try {
    await api('POST', `/api/runs/${encodeURIComponent(id)}/stop`);
    runResult(`stopping ${id}: its faults are reverted, what it measured is kept`, false);
  } catch (e) {
    runResult(e.message, true);
  }
  refreshRuns().catch(() => {});
}

/** A tab cannot send the token with a link: the report opens through a link the API
 * makes for it (valid 15 minutes), so its relative links to the PNGs work too. */
async function openReport(id) {
  const tab = window.open('', '_blank');
  try {
    const l = await api('POST', `/api/runs/${encodeURIComponent(id)}/link`);
    if (tab) {
      tab.opener = null;
      tab.location = l.url + 'report.html';
    }
  } catch (e) {
    if (tab) tab.close();
    runResult(e.message, true);
  }
}

// ---- start ----

async function refreshAll() {
  await Promise.all([refreshAgents(), refreshFaults(), refreshTraffic(), refreshRuns()]);
}

function every(ms, f) {
  setInterval(() => { f().catch(() => {}); }, ms);
}

async function start() {
  $('#token').value = state.token;
  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('#token').value.trim();
    sessionStorage.setItem('faultline.token', state.token);
    boot();
  });
  $('#forget').addEventListener('click', () => {
    state.token = '';
    sessionStorage.removeItem('faultline.token');
    $('#token').value = '';
    setConn('unauthenticated', 'signed out');
  });
  $('#kind').addEventListener('change', drawForm);
  $('#apply').addEventListener('submit', submitApply);
  $('#preview').addEventListener('click', () => preview().catch(() => {}));
  $('#revert-all').addEventListener('click', () => revert());
  $('#traffic-form').addEventListener('submit', submitTraffic);
  $('#traffic-stop').addEventListener('click', stopTraffic);
  $('#run-form').addEventListener('submit', submitRun);
  every(2000, refreshAgents);
  every(2000, refreshFaults);
  every(1000, refreshTraffic);
  every(2000, refreshRuns);
  setInterval(tickCountdown, 250);
  followEvents();
  boot();
}

let booted = false;

/** Loads what needs credentials; again after a token is given. */
async function boot() {
  try {
    if (!booted) await loadKinds();
    booted = true;
    await refreshAll();
  } catch (e) {
    if (e.status !== 401) setConn('down', e.message);
  }
}

start();
