// The status page's script: renders each snapshot the node pushes over /ws, and sends signed actions in admin mode.
import { hmacSha256Hex } from './hmac.js';

const $ = (id) => document.getElementById(id);
let hello = null;
let seq = 0;
let nextId = 1;
let retryMs = 500;

/** An element with a class and text (text only: names and messages never become markup). */
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${u[i]}`;
}

function duration(s) {
  if (s === null || s === undefined) return '?';
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A progress bar with its label. */
function bar(percent, label) {
  const b = el('div', 'bar');
  const fill = el('div');
  fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  b.append(fill, el('span', '', label));
  return b;
}

/** A definition list of [term, value, class, key] rows; `key` names the value for tests (data-k). */
function facts(rows) {
  const dl = el('dl');
  for (const [k, v, cls, key] of rows) {
    const dd = el('dd', cls, v);
    if (key) dd.dataset.k = key;
    dl.append(el('dt', '', k), dd);
  }
  return dl;
}

function nodeCard(s) {
  const c = el('div', 'node me');
  c.dataset.node = s.node;
  const h = el('h3');
  h.append(el('span', '', `${s.node} (this node)`), el('span', s.role, s.role));
  c.append(h, facts([
    ['role', s.role, s.role, 'role'],
    ['disk', s.disk, s.disk, 'disk'],
    ['quorum', `${s.quorum ? 'yes' : 'no'} (${s.votes.needed ? `${s.votes.have} of ${s.votes.needed} votes` : 'quorum off'})`, s.quorum ? 'yes' : 'no', 'quorum'],
    ['size', bytes(s.size), ''],
    ['clients', s.clients, ''],
    ['generation', s.generation, 'sub'],
  ]));
  return c;
}

function peerCard(name, p, me) {
  const c = el('div', 'node');
  c.dataset.node = name;
  const h = el('h3');
  h.append(el('span', '', name), el('span', p.role === 'Unknown' ? 'sub' : p.role, p.role));
  c.append(h, facts([
    ['connection', p.connection, p.connection, 'connection'],
    ['role', p.role, p.role, 'role'],
    ['disk', p.disk, p.disk, 'disk'],
    ['replication', p.replication, p.replication, 'replication'],
    ['out of sync', bytes(p.outOfSyncBytes), p.outOfSyncBytes > 0 ? 'Outdated' : '', 'oos'],
  ]));
  if (p.splitBrain) c.append(el('p', 'alert', `split brain: ${p.splitBrain}`));
  if (p.resync) {
    const r = p.resync;
    const dir = r.asTarget ? `${name} → ${me}` : `${me} → ${name}`;
    c.append(el('div', 'sub', `resync ${dir}${r.full ? ' (full)' : ''}${r.checksums ? ' (checksums)' : ''}`),
      bar(r.percent, `${r.percent.toFixed(1)}%`),
      el('div', 'sub', `${bytes(r.doneBytes)} of ${bytes(r.totalBytes)} · ${bytes(r.rateBytesPerSec)}/s · ETA ${duration(r.etaSeconds)}`));
  }
  if (p.verify) {
    const v = p.verify;
    c.append(el('div', 'sub', `verify ${v.running ? 'running' : 'done'}: ${v.outOfSyncBlocks} blocks (${bytes(v.outOfSyncBytes)}) out of sync, ${v.seconds.toFixed(1)} s`));
    if (v.running) c.append(bar(v.percent, `${v.percent.toFixed(1)}%`));
  }
  if (hello?.admin) {
    const b = el('div');
    for (const cmd of ['connect', 'disconnect']) {
      const x = el('button', '', cmd);
      x.addEventListener('click', () => act(cmd, name));
      b.append(x);
    }
    c.append(b);
  }
  return c;
}

/** An SVG sparkline of `values` (null: no sample), scaled to their maximum. */
function sparkline(values, title) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 60 20');
  svg.setAttribute('preserveAspectRatio', 'none');
  const t = document.createElementNS(ns, 'title');
  t.textContent = title;
  svg.append(t);
  const max = Math.max(1e-9, ...values.map((v) => v ?? 0));
  const pts = values.map((v, i) => `${i + 60 - values.length},${20 - ((v ?? 0) / max) * 18 - 1}`).join(' ');
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', pts);
  svg.append(line);
  return svg;
}

function queues(qs) {
  const box = $('queues');
  box.replaceChildren();
  if (qs.length === 0) {
    box.append(el('p', 'sub', 'No per-queue counters: no front-end (vhost-user socket or iSCSI portal) serves on this node yet.'));
    return;
  }
  const t = el('table');
  const head = el('tr');
  for (const h of ['queue', 'IOPS', 'IOPS (1 min)', 'latency (1 min)', 'in flight', 'errors']) head.append(el('th', '', h));
  t.append(head);
  for (const q of qs) {
    const tr = el('tr');
    tr.dataset.queue = q.name;
    const lat = q.latencyMs.filter((v) => v !== null);
    const last = lat.length ? `${lat[lat.length - 1].toFixed(3)} ms` : '–';
    const cells = [q.name, q.iops.length ? q.iops[q.iops.length - 1] : 0, sparkline(q.iops, 'requests per second'), null, q.inFlight, q.errors];
    cells[3] = el('span');
    cells[3].append(sparkline(q.latencyMs, 'mean latency (ms)'), ` ${last}`);
    for (const c of cells) { const td = el('td'); if (c instanceof Node) td.append(c); else td.textContent = String(c); tr.append(td); }
    t.append(tr);
  }
  box.append(t);
}

function render(m) {
  const s = m.status;
  $('title').textContent = `twindisk · ${s.resource} · ${s.node}`;
  document.title = `${s.role === 'Primary' ? '● ' : ''}${s.resource}/${s.node} — twindisk`;
  $('updated').textContent = `updated ${new Date(m.at).toLocaleTimeString()}`;
  const nodes = $('nodes');
  nodes.replaceChildren(nodeCard(s), ...Object.entries(s.peers).map(([n, p]) => peerCard(n, p, s.node)));
  const raid = $('raid');
  raid.replaceChildren();
  if (s.raid) {
    const r = s.raid;
    const work = r.work ? `, ${r.work.action} ${r.work.percent}%${r.work.slot !== undefined ? ` of slot ${r.work.slot}` : ''}` : '';
    raid.append(el('span', r.degraded > 0 ? 'alert' : '', `md array: ${r.level} ${r.mdstat} ${r.degraded > 0 ? `degraded (${r.degraded} of ${r.raidDevices} slots out)` : 'in sync'}${work}`));
    if (r.work) raid.append(bar(r.work.percent, `${r.work.action} ${r.work.percent}%`));
  }
  queues(m.queues);
  const ev = $('events');
  ev.replaceChildren();
  for (const e of [...m.events].reverse()) ev.append(el('li', e.level, `${new Date(e.at).toLocaleTimeString()}  ${e.text}`));
  if (m.events.length === 0) ev.append(el('li', 'sub', 'nothing yet'));
}

/** Sends an action signed with the secret typed in (admin mode only; the node refuses it otherwise). */
function act(cmd, peer) {
  const result = $('result');
  const secret = $('secret').value;
  if (!hello || !socket || socket.readyState !== WebSocket.OPEN) { result.className = 'bad'; result.textContent = 'not connected'; return; }
  if (!secret) { result.className = 'bad'; result.textContent = 'type the resource secret first'; return; }
  seq++;
  const msg = ['twindisk-status-action', hello.resource, hello.node, hello.nonce, String(seq), cmd, peer ?? ''].join('\n');
  const req = { type: 'action', id: nextId++, seq, cmd, mac: hmacSha256Hex(secret, msg) };
  if (peer) req.peer = peer;
  result.className = '';
  result.textContent = `${cmd}${peer ? ` ${peer}` : ''}…`;
  socket.send(JSON.stringify(req));
}

for (const b of document.querySelectorAll('#admin button[data-cmd]')) b.addEventListener('click', () => act(b.dataset.cmd));

let socket = null;
function connect() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  socket = ws;
  ws.onopen = () => { retryMs = 500; $('link').textContent = 'live'; $('link').className = 'badge live'; };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'hello') {
      hello = m;
      seq = 0;
      $('mode').textContent = m.admin ? 'admin' : 'read-only';
      $('admin').hidden = !m.admin;
    } else if (m.type === 'status') {
      render(m);
    } else if (m.type === 'result') {
      const r = $('result');
      r.className = m.ok ? 'ok' : 'bad';
      r.textContent = m.ok ? 'done' : m.error;
    }
  };
  ws.onclose = () => {
    $('link').textContent = 'disconnected: retrying';
    $('link').className = 'badge down';
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}
connect();
