// Shoal's operator console (docs/console.md): loads the state with fetch(),
// then follows it over the WebSocket stream (/v1/stream). Plain DOM, no
// dependencies; every value from the API is written with textContent.
'use strict';
(() => {
  const TOKEN_KEY = 'shoal.console.token';
  const MAX_COMMANDS = 1000; // command entities kept in memory (most recent)
  const SHOWN_COMMANDS = 20;
  const SHOWN_ALERTS = 12;
  const RATE_WINDOW_MS = 10000;
  const POLL_MS = 5000;
  const APPROVAL_STATUS = { pending: 'pending_approval', approved: 'approved', rejected: 'rejected', expired: 'expired' };
  const SVG_NS = 'http://www.w3.org/2000/svg'; // a namespace name, nothing is fetched from it
  const $ = (id) => document.getElementById(id);

  const model = {
    symbols: new Map(), // key -> symbol state
    previous: new Map(), // key -> last price shown (for the up/down colour)
    commands: new Map(), // id -> Map(shard -> command state part)
    alerts: new Map(), // key -> Map(shard -> alert list)
    ledgers: new Map(), // account -> {ledger, decision, halted, at}
    offsets: new Map(), // "topic/partition" -> {topic, offset, eventTime}
    topicKinds: new Map(), // topic -> Set(entity kinds seen from it)
    history: [], // [{at, totals: Map(topic -> records applied)}]
    decided: new Set(), // command ids decided here, hidden until the stream says so
    approvalKey: '',
    frames: 0,
    lastUpdate: null,
  };
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let socket = null;
  let retry = 0;
  let generation = 0;
  let renderQueued = false;

  // ---- API ----------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = { Authorization: 'Bearer ' + token };
    if (options.body) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, { ...options, headers, cache: 'no-store' });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error(body && body.error ? body.error.message : response.statusText);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function hex(text) {
    return Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function loadInitial() {
    const [symbols, commands, alerts, approvals] = await Promise.all([
      api('v1/entities?kind=symbol&limit=50'),
      api('v1/commands?limit=100'),
      api('v1/alerts?limit=' + SHOWN_ALERTS),
      api('v1/approvals?status=pending&limit=100'),
    ]);
    const states = await Promise.all(
      symbols.entities.map((e) => api('v1/state/symbol/' + encodeURIComponent(e.key)).catch(() => null)),
    );
    for (const s of states) if (s) model.symbols.set(s.key, s.state);
    for (const c of commands.commands) putCommand(c.id, 'api', c);
    for (const c of approvals.approvals) putCommand(c.id, 'api', c);
    model.alerts.set('', new Map([['api', alerts.alerts]]));
    noteFreshness(approvals.freshness);
    loadMembers();
  }

  async function poll() {
    if (!token) return;
    try {
      const approvals = await api('v1/approvals?status=pending&limit=100');
      for (const c of approvals.approvals) putCommand(c.id, 'api', c);
      noteFreshness(approvals.freshness);
      queueRender();
    } catch (_) {
      // The stream's status says whether the API is reachable.
    }
  }

  async function loadMembers() {
    try {
      const answer = await api('v1/admin/members');
      const list = answer.members.map((m) => `${m.instance} (${m.shards.length} shards${m.local ? ', this one' : ''})`);
      $('members').textContent = 'Orchestrator instances: ' + list.join(', ');
    } catch (e) {
      $('members').textContent =
        e.status === 403 ? 'Orchestrator instances: shown with an admin token.' : 'Orchestrator instances: ' + e.message;
    }
  }

  // ---- connection -----------------------------------------------------------

  function setStatus(state, text) {
    const status = $('status');
    status.dataset.state = state;
    status.textContent = text;
  }

  function closeSocket() {
    if (socket) {
      socket.onclose = null;
      socket.close();
      socket = null;
    }
  }

  async function connect() {
    const mine = ++generation;
    closeSocket();
    setStatus('connecting', 'connecting…');
    try {
      await loadInitial();
    } catch (e) {
      if (mine !== generation) return;
      if (e.status === 401) {
        forget();
        setStatus('error', 'token refused: ' + e.message);
      } else {
        setStatus('error', 'cannot load the state: ' + e.message);
        reconnectLater(mine);
      }
      return;
    }
    if (mine !== generation) return;
    queueRender();
    const url = new URL('v1/stream', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers cannot set Authorization on a WebSocket: the token goes as a
    // subprotocol, hex-encoded; the server answers with shoal.stream.
    const ws = new WebSocket(url, ['shoal.stream', 'bearer.' + hex(token)]);
    socket = ws;
    ws.onopen = () => {
      retry = 0;
      const entities = [{ kind: 'symbol' }, { kind: 'command' }, { kind: 'alerts' }];
      ws.send(JSON.stringify({ op: 'subscribe', entities }));
      setStatus('live', 'live');
    };
    ws.onmessage = (event) => {
      if (mine === generation) onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (mine !== generation) return;
      setStatus('error', `stream closed (${event.code}); reconnecting`);
      reconnectLater(mine);
    };
  }

  function reconnectLater(mine) {
    const delay = Math.min(10000, 1000 * 2 ** retry++);
    setTimeout(() => {
      if (mine === generation) connect();
    }, delay);
  }

  function forget() {
    generation++;
    closeSocket();
    sessionStorage.removeItem(TOKEN_KEY);
    token = '';
    setStatus('idle', 'not connected');
  }

  // ---- the model --------------------------------------------------------------

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return;
    }
    model.frames++;
    if (!['snapshot', 'update', 'removed'].includes(frame.type)) return;
    if (frame.watermark) noteWatermark(frame.watermark, frame.kind);
    const shard = frame.shard ? frame.shard.topic + '/' + frame.shard.partition : 'none';
    const state = frame.doc ? frame.doc.state : null;
    if (frame.kind === 'symbol') {
      if (state) model.symbols.set(frame.key, state);
      else if (frame.type === 'removed') model.symbols.delete(frame.key);
    } else if (frame.kind === 'command') {
      putCommand(frame.key, shard, state);
    } else if (frame.kind === 'alerts') {
      const parts = model.alerts.get(frame.key) || new Map();
      if (state) parts.set(shard, state);
      else parts.delete(shard);
      model.alerts.set(frame.key, parts);
    }
    model.lastUpdate = new Date();
    queueRender();
  }

  function noteWatermark(w, kind) {
    model.offsets.set(w.topic + '/' + w.partition, { topic: w.topic, offset: w.offset, eventTime: w.event_time });
    if (kind) {
      const kinds = model.topicKinds.get(w.topic) || new Set();
      kinds.add(kind);
      model.topicKinds.set(w.topic, kinds);
    }
  }

  function noteFreshness(freshness) {
    for (const w of (freshness && freshness.watermarks) || []) {
      const known = model.offsets.get(w.topic + '/' + w.partition);
      if (!known || known.offset <= w.offset) noteWatermark(w, null);
    }
  }

  function at(text) {
    const ms = text ? Date.parse(text) : NaN;
    return Number.isFinite(ms) ? ms : 0;
  }

  function putCommand(id, shard, state) {
    const parts = model.commands.get(id) || new Map();
    if (state) parts.set(shard, state);
    else parts.delete(shard);
    if (parts.size === 0) {
      model.commands.delete(id);
      return;
    }
    model.commands.set(id, parts);
    const c = merged(id, parts);
    const output = c.result && c.result.output;
    if (c.kind === 'paper_order' && output && output.ledger) {
      const account = output.account || c.key;
      const known = model.ledgers.get(account);
      const when = at(c.result.finished_at);
      if (!known || known.at <= when) {
        model.ledgers.set(account, { ledger: output.ledger, decision: output.decision, halted: output.halted, at: when });
      }
    }
  }

  // A command's parts (its command, result, dead letter and approval live in
  // different shards) joined as the API joins them.
  function merged(id, parts) {
    const c = { id, key: null, kind: null, seq: null, issued: null, result: null, dead: null, approval: null };
    let updated = 0;
    let e2e = null;
    for (const p of parts.values()) {
      const held = p.approval && p.approval.command;
      c.key = c.key || p.key;
      c.kind = c.kind || p.kind || (p.issued && p.issued.kind) || (held && held.kind) || null;
      if (c.seq == null && p.seq != null) c.seq = p.seq;
      c.issued = c.issued || p.issued || null;
      c.result = c.result || p.result || null;
      c.dead = c.dead || p.dead_letter || null;
      if (p.approval && (!c.approval || at(p.approval.updated && p.approval.updated.at) > at(c.approval.updated.at))) {
        c.approval = p.approval;
      }
      if (p.timings && p.timings.end_to_end_ms != null) e2e = p.timings.end_to_end_ms;
      updated = Math.max(updated, at(p.updated && p.updated.at));
    }
    if (c.issued && c.result) e2e = at(c.result.finished_at) - at(c.issued.issued_at);
    c.e2e = e2e;
    c.updated = updated;
    if (c.result) c.status = c.result.status;
    else if (c.dead) c.status = 'dead_lettered';
    else if (c.issued) c.status = 'issued';
    else if (c.approval) c.status = APPROVAL_STATUS[c.approval.status] || c.approval.status;
    else c.status = 'unknown';
    return c;
  }

  // ---- rendering ----------------------------------------------------------------

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => {
      renderQueued = false;
      render();
    }, 250);
  }

  function cell(value) {
    const td = document.createElement('td');
    if (value instanceof Node) td.append(value);
    else if (value && typeof value === 'object') {
      td.textContent = value.text == null ? '' : String(value.text);
      if (value.cls) td.className = value.cls;
      if (value.title) td.title = value.title;
    } else td.textContent = value == null ? '' : String(value);
    return td;
  }

  function row(cells, data = {}) {
    const tr = document.createElement('tr');
    for (const [name, value] of Object.entries(data)) tr.dataset[name] = value;
    tr.append(...cells.map(cell));
    return tr;
  }

  function fill(tbody, rows, empty) {
    if (rows.length === 0) {
      const columns = tbody.closest('table').querySelectorAll('thead th').length;
      const td = cell({ text: empty, cls: 'note' });
      td.colSpan = columns;
      const tr = document.createElement('tr');
      tr.append(td);
      rows = [tr];
    }
    tbody.replaceChildren(...rows);
  }

  function num(text, digits) {
    const n = Number(text);
    return text == null || !Number.isFinite(n) ? '–' : n.toFixed(digits);
  }

  function time(ms) {
    return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : '–';
  }

  function short(id) {
    return { text: String(id).slice(-12), title: String(id) };
  }

  function sparkline(samples) {
    const ns = SVG_NS;
    const svg = document.createElementNS(ns, 'svg');
    const width = 120;
    const height = 26;
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', String(width));
    svg.setAttribute('height', String(height));
    svg.setAttribute('class', 'spark');
    svg.setAttribute('role', 'img');
    const prices = samples.map((s) => Number(s.price)).filter(Number.isFinite);
    if (prices.length > 1) {
      const low = Math.min(...prices);
      const span = Math.max(...prices) - low || 1;
      const step = width / (prices.length - 1);
      const points = prices.map((p, i) => `${(i * step).toFixed(1)},${(height - 2 - ((p - low) / span) * (height - 4)).toFixed(1)}`);
      const line = document.createElementNS(ns, 'polyline');
      line.setAttribute('points', points.join(' '));
      svg.append(line);
      const change = ((prices[prices.length - 1] - prices[0]) / prices[0]) * 100;
      svg.setAttribute('aria-label', `last minute: ${prices.length} trades, ${change.toFixed(2)}%`);
    } else {
      svg.setAttribute('aria-label', 'not enough trades in the last minute');
    }
    return svg;
  }

  function renderPrices() {
    const keys = [...model.symbols.keys()].sort();
    const rows = keys.map((key) => {
      const s = model.symbols.get(key);
      const price = s.last_trade ? s.last_trade.price : null;
      const before = model.previous.get(key);
      const move = before == null || price == null ? '' : Number(price) > before ? 'up' : Number(price) < before ? 'down' : '';
      if (price != null) model.previous.set(key, Number(price));
      const book = s.book && s.book.top ? `${num(s.book.top.bid_price, 2)} / ${num(s.book.top.ask_price, 2)}` : '–';
      const bar = s.bars && s.bars['1m'] && s.bars['1m'].current;
      const ohlc = bar ? [bar.open, bar.high, bar.low, bar.close].map((v) => num(v, 2)).join(' ') : '–';
      const samples = (s.rolling && s.rolling.samples) || [];
      return row(
        [key, { text: num(price, 2), cls: 'price ' + move }, sparkline(samples), book, ohlc,
          bar ? num(bar.volume, 3) : '–', num(s.rolling && s.rolling.vwap, 4), s.trades],
        { symbol: key },
      );
    });
    fill($('price-rows'), rows, 'no symbol in the state yet');
  }

  function allCommands() {
    const list = [...model.commands.entries()].map(([id, parts]) => merged(id, parts));
    list.sort((a, b) => b.updated - a.updated);
    for (const c of list.slice(MAX_COMMANDS)) model.commands.delete(c.id);
    return list.slice(0, MAX_COMMANDS);
  }

  function resultText(c) {
    if (c.dead) return 'dead letter: ' + c.dead.reason;
    if (!c.result) return c.approval ? 'approval ' + c.approval.status : '';
    const out = c.result.output;
    if (c.result.error) return c.result.error;
    if (out && out.message) return out.message;
    return out == null ? '' : summary(out);
  }

  function renderCommands(commands) {
    const rows = commands.slice(0, SHOWN_COMMANDS).map((c) =>
      row(
        [time(c.updated), short(c.id), c.kind, c.key, c.seq, { text: c.status, cls: 'status ' + statusClass(c.status) },
          c.e2e == null ? '–' : c.e2e + ' ms', { text: resultText(c), cls: 'wrap' }],
        { id: c.id, status: c.status },
      ),
    );
    $('command-count').textContent = String(commands.length);
    fill($('command-rows'), rows, 'no command in the state yet');
  }

  function statusClass(status) {
    if (status === 'succeeded') return 'up';
    if (['failed', 'dead_lettered', 'rejected', 'expired', 'unsupported'].includes(status)) return 'down';
    return 'warn';
  }

  function renderApprovals(commands) {
    const pending = commands
      .filter((c) => c.approval && c.approval.status === 'pending' && !model.decided.has(c.id))
      .sort((a, b) => at(a.approval.deadline) - at(b.approval.deadline));
    $('approval-count').textContent = String(pending.length);
    // Rebuilt only when the queue changes, so a focused button stays.
    const key = pending.map((c) => c.id).join(',');
    if (key === model.approvalKey && key !== '') return;
    model.approvalKey = key;
    const rows = pending.map((c) => {
      const held = c.approval.command || {};
      const decide = document.createElement('span');
      for (const action of ['approve', 'reject']) {
        const button = document.createElement('button');
        button.type = 'button';
        button.dataset.action = action;
        button.dataset.id = c.id;
        button.textContent = action === 'approve' ? 'Approve' : 'Reject';
        button.setAttribute('aria-label', `${button.textContent} ${held.kind || c.kind} for ${c.key} (${c.id})`);
        decide.append(button, ' ');
      }
      const payload = JSON.stringify(held.payload == null ? null : held.payload);
      return row(
        [short(c.id), held.kind || c.kind, c.key, { text: summary(held.payload), cls: 'wrap', title: payload },
          time(at(c.approval.deadline)), decide],
        { id: c.id },
      );
    });
    fill($('approval-rows'), rows, 'nothing waits for approval');
  }

  // A payload in one short line: its scalar fields as `name value`.
  function summary(payload) {
    if (payload == null || typeof payload !== 'object') return String(payload);
    const parts = Object.entries(payload)
      .filter(([, v]) => v !== null && typeof v !== 'object')
      .map(([k, v]) => `${k} ${v}`);
    const text = parts.join(', ');
    return text.length > 140 ? text.slice(0, 139) + '…' : text;
  }

  async function decide(button) {
    const { id, action } = button.dataset;
    const buttons = button.closest('tr').querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    const message = $('approval-message');
    message.textContent = `${action === 'approve' ? 'Approving' : 'Rejecting'} ${id}…`;
    const reason = $('approval-reason').value.trim();
    try {
      const body = JSON.stringify(reason ? { reason } : {});
      const answer = await api(`v1/approvals/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
      const by = answer.decided_by && answer.decided_by.token_id ? ` by token ${answer.decided_by.token_id}` : '';
      model.decided.add(id);
      render();
      message.textContent = `${action === 'approve' ? 'Approved' : 'Rejected'} ${id}${by}.`;
    } catch (e) {
      message.textContent = (e.status === 403 ? 'Refused (an admin token is needed): ' : 'Refused: ') + e.message;
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  function renderAlerts() {
    const seen = new Map();
    for (const parts of model.alerts.values()) {
      for (const list of parts.values()) for (const a of list || []) seen.set(a.command_id + '/' + a.at, a);
    }
    const alerts = [...seen.values()].sort((a, b) => at(b.at) - at(a.at)).slice(0, SHOWN_ALERTS);
    const rows = alerts.map((a) =>
      row([time(at(a.at)), { text: a.severity, cls: a.severity === 'info' ? '' : 'down' }, a.subject || a.entity,
        { text: a.message || '', cls: 'wrap' }], { command: a.command_id }),
    );
    fill($('alert-rows'), rows, 'no alert yet');
  }

  function renderLedger() {
    const rows = [...model.ledgers.entries()].sort().map(([account, l]) => {
      const positions = Object.entries(l.ledger.positions || {})
        .map(([symbol, p]) => `${symbol} ${num(p && typeof p === 'object' ? p.quantity : p, 3)}`)
        .join(', ');
      const pnl = Number(l.ledger.realised_pnl);
      const decision = l.decision && l.decision.decision ? l.decision.decision : l.decision && l.decision.status;
      return row(
        [account, num(l.ledger.equity, 2), num(l.ledger.cash, 2),
          { text: num(l.ledger.realised_pnl, 2), cls: pnl > 0 ? 'up' : pnl < 0 ? 'down' : '' }, num(l.ledger.fees_paid, 2),
          positions || 'flat', l.ledger.fills, (decision || '') + (l.halted ? ' (halted)' : '')],
        { account },
      );
    });
    fill($('ledger-rows'), rows, 'no paper_order result seen yet');
  }

  function sample() {
    const totals = new Map();
    for (const o of model.offsets.values()) totals.set(o.topic, (totals.get(o.topic) || 0) + Math.max(0, o.offset + 1));
    const now = Date.now();
    model.history.push({ at: now, totals });
    while (model.history.length > 2 && now - model.history[1].at >= RATE_WINDOW_MS) model.history.shift();
  }

  function renderTopology(commands) {
    const topics = new Map();
    for (const o of model.offsets.values()) {
      const t = topics.get(o.topic) || { partitions: 0, active: 0, offset: 0, eventTime: 0 };
      t.partitions++;
      if (o.offset >= 0) t.active++;
      t.offset += Math.max(0, o.offset + 1);
      t.eventTime = Math.max(t.eventTime, at(o.eventTime));
      topics.set(o.topic, t);
    }
    const first = model.history[0];
    const last = model.history[model.history.length - 1];
    const seconds = first && last ? (last.at - first.at) / 1000 : 0;
    const rows = [...topics.entries()].sort().map(([topic, t]) => {
      const rate = seconds > 0 ? ((last.totals.get(topic) || 0) - (first.totals.get(topic) || 0)) / seconds : null;
      const kinds = [...(model.topicKinds.get(topic) || [])].sort().join(', ');
      return row([topic, kinds || '–', `${t.active}/${t.partitions}`, t.offset, { text: rate == null ? '–' : rate.toFixed(1), cls: 'rate' },
        time(t.eventTime)], { topic });
    });
    fill($('topics').tBodies[0], rows, 'no watermark reported yet');

    const since = Date.now() - 60000;
    const kinds = new Map();
    for (const c of commands) {
      const k = kinds.get(c.kind || '?') || { issued: 0, results: 0, failed: 0, e2e: [] };
      if (c.issued && at(c.issued.issued_at) >= since) k.issued++;
      if (c.result && at(c.result.finished_at) >= since) {
        k.results++;
        if (c.result.status !== 'succeeded') k.failed++;
        if (c.e2e != null) k.e2e.push(c.e2e);
      }
      kinds.set(c.kind || '?', k);
    }
    const kindRows = [...kinds.entries()].sort().map(([kind, k]) => {
      k.e2e.sort((a, b) => a - b);
      const median = k.e2e.length ? k.e2e[Math.floor(k.e2e.length / 2)] + ' ms' : '–';
      return row([kind, k.issued, k.results, { text: k.failed, cls: k.failed ? 'down' : '' }, median], { kind });
    });
    fill($('kinds').tBodies[0], kindRows, 'no command seen yet');
  }

  function render() {
    const commands = allCommands();
    renderTopology(commands);
    renderApprovals(commands);
    renderPrices();
    renderLedger();
    renderCommands(commands);
    renderAlerts();
    $('frames').textContent = String(model.frames);
    $('last-update').textContent = model.lastUpdate ? time(model.lastUpdate.getTime()) : 'never';
  }

  // ---- start ----------------------------------------------------------------------

  function start() {
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      let value = $('token').value.trim();
      // A line pasted from a tokens file ("admin:<token>") works too.
      const role = /^(read|admin):(.{16,})$/.exec(value);
      if (role) value = role[2];
      token = value;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      connect();
    });
    $('forget').addEventListener('click', forget);
    $('approval-rows').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      if (button && !button.disabled) decide(button);
    });
    setInterval(() => {
      sample();
      if (token) render();
    }, 1000);
    setInterval(poll, POLL_MS);
    if (token) connect();
    else render();
  }

  start();
})();
