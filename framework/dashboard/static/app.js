/* strikebench dashboard: plain JS, no build step, no network but this server. */
"use strict";

const S = {sources: [], actions: false, live: null, charts: []};

// ------------------------------------------------------------------ helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "html") el.innerHTML = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const $ = (sel, root) => (root || document).querySelector(sel);
async function api(path, opts) {
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = {error: r.statusText}; }
  if (!r.ok) throw new Error(body && body.error ? body.error : r.statusText);
  return body;
}
function num(v) { return v === null || v === undefined || v === "" ? null : Number(v); }
function money(v, signed) {
  v = num(v);
  if (v === null || Number.isNaN(v)) return "";
  const s = Math.abs(v).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  return (v < 0 ? "-" : signed && v > 0 ? "+" : "") + s;
}
function fixed(v, d) { v = num(v); return v === null || Number.isNaN(v) ? "" : v.toFixed(d); }
function pct(v, d) { v = num(v); return v === null ? "" : (v * 100).toFixed(d === undefined ? 1 : d) + "%"; }
function cls(v) { v = num(v); return v === null ? "" : v > 0 ? "pos" : v < 0 ? "neg" : ""; }
function tm(iso) { return iso ? String(iso).replace("T", " ").slice(0, 16) : ""; }
function card(key, label, value, klass) {
  return h("div", {class: "card", "data-key": key}, h("div", {class: "k"}, label), h("div", {class: "v " + (klass || "")}, value));
}
function table(cols, rows, opts) {
  opts = opts || {};
  const head = h("tr", {}, cols.map(c => h("th", {class: (c.n ? "n " : "") + (opts.sort ? "sort" : ""),
    onclick: opts.sort ? () => opts.sort(c) : null}, c.label)));
  const body = rows.map((r, i) => {
    const tr = h("tr", {class: (opts.click ? "click " : "") + (opts.rowClass ? opts.rowClass(r) : ""),
      onclick: opts.click ? () => opts.click(r, tr) : null, "data-id": opts.id ? opts.id(r) : null},
      cols.map(c => {
        const v = c.f ? c.f(r, i) : r[c.k];
        return h("td", {class: (c.n ? "n " : "") + (c.c ? c.c(r) : "")}, v instanceof Node ? v : (v === null || v === undefined ? "" : v));
      }));
    return tr;
  });
  return h("table", {class: opts.class || ""}, h("thead", {}, head), h("tbody", {}, body));
}
function destroyCharts() { S.charts.forEach(c => c.destroy()); S.charts = []; }
function stopLive() { if (S.live) { S.live.close(); S.live = null; } }
function err(e) { return h("p", {class: "err"}, String(e.message || e)); }

// ------------------------------------------------------------------ routing
async function boot() {
  const r = window.SB_SOURCES || await api("/api/sources");  // the server puts them in the page: one round trip less
  S.sources = r.sources; S.actions = r.actions;
  $("#mode").textContent = r.actions ? "kill/flatten enabled (token)" : "read-only";
  window.addEventListener("hashchange", route);
  route();
}
function nav(active) {
  const n = $("#sources"); n.innerHTML = "";
  for (const s of S.sources) {
    n.append(h("a", {href: `#/s/${s.id}`, class: s.id === active ? "on" : "", title: s.label},
      `${s.kind}: ${s.run_id || s.study || s.label}`));
  }
}
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let sid = parts[0] === "s" ? Number(parts[1]) : 0;
  if (!S.sources[sid]) sid = 0;
  nav(sid);
  const src = S.sources[sid];
  const sub = parts.slice(2);
  if (!src) { $("#page").replaceChildren(h("p", {}, "no source")); return; }
  if (S.current && S.current.sid === sid && S.current.kind === "run" && src.kind === "run") {
    S.current.onroute(sub); return;  // same run: only the day / decision changes
  }
  destroyCharts(); stopLive();
  const page = h("div", {});
  $("#page").replaceChildren(page);
  if (src.kind === "run") runPage(page, src, sub);
  else if (src.kind === "live") livePage(page, src, sub);
  else if (src.kind === "sweep") sweepPage(page, src);
}

// ------------------------------------------------------------------ backtest run
async function runPage(root, src, sub) {
  const sid = src.id;
  const cur = {sid, kind: "run", onroute: () => {}};
  S.current = cur;
  root.append(h("h1", {}, src.run_id, src.completed ? "" : h("span", {class: "badge bad"}, " INCOMPLETE")),
    h("p", {class: "muted"}, src.label));
  const cards = h("div", {class: "cards", id: "summary"}); root.append(cards);
  root.append(h("h2", {}, "Equity and drawdown ", h("span", {class: "muted", id: "eq-note"}, "")),
    h("div", {class: "panel"}, h("div", {id: "eq-chart"}), h("div", {id: "dd-chart"}),
      h("div", {class: "muted"}, "drag to zoom (the server sends finer points for the range), double-click to reset")));
  const attrib = h("div", {}); root.append(h("h2", {}, "Per-strategy attribution"), attrib);
  const tradesBox = h("div", {}); root.append(h("h2", {}, "Trades"), tradesBox);
  const decBox = h("div", {id: "decisions"}); root.append(h("h2", {}, "Decisions of a day"), decBox);
  const chainBox = h("div", {id: "chain"}); root.append(chainBox);
  try {
    // every first request at once: the charts do not wait for the tables
    const width = Math.round(Math.max(400, $("#eq-chart").clientWidth || 900));
    const eqData = api(`/api/run/${sid}/equity?points=${width}`);
    const charts = eqData.then(d => equityCharts(sid, d));
    const [summary, trades, days] = await Promise.all([api(`/api/run/${sid}/summary`),
      api(`/api/run/${sid}/trades`), api(`/api/run/${sid}/days`)]);
    renderSummary(cards, summary);
    renderAttribution(attrib, summary);
    renderTrades(tradesBox, trades.trades, sid);
    const dayView = dayPicker(decBox, chainBox, days.days, `/api/run/${sid}`, `#/s/${sid}`);
    cur.onroute = (s) => dayView.go(s);
    await Promise.all([dayView.go(sub), charts]);
    // when everything of the first view is drawn, in ms since navigation (benchmarks/dashboard_bench.py reads it)
    requestAnimationFrame(() => { document.body.dataset.ready = Math.round(performance.now()); });
  } catch (e) { root.append(err(e)); }
}

function renderSummary(box, s) {
  box.replaceChildren(
    card("final_equity", "final equity", money(s.final_equity)),
    card("return_pct", "return", s.return_pct === null ? "" : fixed(s.return_pct, 2) + "%", cls(s.return_pct)),
    card("realized_pnl", "realized P&L", money(s.realized_pnl, true), cls(s.realized_pnl)),
    card("fees", "fees", money(s.fees)),
    card("trades", "closed trades", s.trades),
    card("open_trades", "open trades", s.open_trades),
    card("win_rate", "win rate", s.win_rate === null ? "" : pct(s.win_rate)),
    card("max_drawdown", "max drawdown (daily)", money(s.max_drawdown)),
    card("max_drawdown_per_bar", "max drawdown (per bar)", money(s.max_drawdown_per_bar)),
    card("sharpe", "Sharpe", s.sharpe === null ? "" : fixed(s.sharpe, 2)),
    card("decisions", "decisions", s.decisions));
}

function renderAttribution(box, s) {
  const rows = Object.entries(s.per_strategy || {}).map(([k, v]) => Object.assign({strategy: k}, v));
  box.replaceChildren(table([
    {k: "strategy", label: "strategy"}, {k: "trades", label: "trades", n: 1}, {k: "open_trades", label: "open", n: 1},
    {label: "win rate", n: 1, f: r => r.win_rate === null ? "" : pct(r.win_rate)},
    {label: "realized P&L", n: 1, f: r => money(r.realized_pnl, true), c: r => cls(r.realized_pnl)},
    {label: "avg P&L", n: 1, f: r => money(r.avg_pnl, true)}, {label: "fees", n: 1, f: r => money(r.fees)},
    {label: "best", n: 1, f: r => money(r.best_trade, true)}, {label: "worst", n: 1, f: r => money(r.worst_trade, true)},
    {label: "avg credit", n: 1, f: r => fixed(r.avg_entry_credit, 2)},
    {label: "decisions (trade/skip)", n: 1, f: r => `${r.decisions} (${r.trade_decisions}/${r.skip_decisions})`},
    {label: "exits", f: r => Object.entries(r.exit_reasons || {}).map(([a, b]) => `${a} ${b}`).join(", ")},
  ], rows, {class: "attrib"}));
}

function renderTrades(box, trades, sid) {
  const strategies = [...new Set(trades.map(t => t.strategy))].sort();
  const reasons = [...new Set(trades.map(t => t.exit_reason || "(open)"))].sort();
  const f = {strategy: "", reason: "", result: "", from: "", to: "", text: ""};
  const sel = (name, opts) => h("select", {name, onchange: e => { f[name] = e.target.value; draw(); }},
    h("option", {value: ""}, "all"), opts.map(o => h("option", {value: o}, o)));
  const inp = (name, type, ph) => h("input", {name, type, placeholder: ph || "", oninput: e => { f[name] = e.target.value; draw(); }});
  const stats = h("span", {class: "muted", id: "trade-stats"});
  const holder = h("div", {class: "scroll"});
  box.replaceChildren(h("div", {class: "filters", id: "trade-filters"},
    h("label", {}, "strategy ", sel("strategy", strategies)), h("label", {}, "exit ", sel("reason", reasons)),
    h("label", {}, "result ", sel("result", ["win", "loss", "open"])),
    h("label", {}, "opened from ", inp("from", "date")), h("label", {}, "to ", inp("to", "date")),
    h("label", {}, "search ", inp("text", "search", "trade id, leg…")), stats), holder);
  let sortKey = "opened_at", sortDir = 1;
  const cols = [
    {k: "opened_at", label: "opened", f: r => tm(r.opened_at)}, {k: "closed_at", label: "closed", f: r => tm(r.closed_at)},
    {k: "strategy", label: "strategy"}, {k: "expiry", label: "expiry"},
    {k: "legs", label: "legs", f: r => r.legs.map(l => `${l.ratio > 0 ? "+" : ""}${l.ratio} ${l.right}${Number(l.strike)}`).join(" ")},
    {k: "contracts", label: "qty", n: 1}, {k: "entry_credit", label: "credit", n: 1}, {k: "exit_debit", label: "exit debit", n: 1},
    {k: "fees", label: "fees", n: 1}, {k: "realized_pnl", label: "P&L", n: 1, f: r => money(r.realized_pnl, true), c: r => cls(r.realized_pnl)},
    {k: "exit_reason", label: "exit"},
  ];
  function draw() {
    const rows = trades.filter(t => {
      if (f.strategy && t.strategy !== f.strategy) return false;
      if (f.reason && (t.exit_reason || "(open)") !== f.reason) return false;
      const p = num(t.realized_pnl);
      if (f.result === "win" && !(p > 0)) return false;
      if (f.result === "loss" && !(p !== null && p <= 0)) return false;
      if (f.result === "open" && t.closed_at) return false;
      if (f.from && t.opened_at.slice(0, 10) < f.from) return false;
      if (f.to && t.opened_at.slice(0, 10) > f.to) return false;
      if (f.text) {
        const hay = (t.trade_id + " " + t.legs.map(l => l.occ).join(" ") + " " + (t.decision_id || "")).toLowerCase();
        if (!hay.includes(f.text.toLowerCase())) return false;
      }
      return true;
    });
    const numeric = ["contracts", "entry_credit", "exit_debit", "fees", "realized_pnl"].includes(sortKey);
    rows.sort((a, b) => {
      let x = a[sortKey], y = b[sortKey];
      if (numeric) { x = num(x); y = num(y); x = x === null ? -Infinity : x; y = y === null ? -Infinity : y; }
      else { x = x || ""; y = y || ""; }
      return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
    });
    // exact cents: sum integer cents, never floats of dollars
    const cents = rows.reduce((s, t) => s + (t.realized_pnl ? Math.round(Number(t.realized_pnl) * 100) : 0), 0);
    const wins = rows.filter(t => num(t.realized_pnl) > 0).length;
    stats.replaceChildren(h("span", {}, `${rows.length} of ${trades.length} trades · P&L `,
      h("b", {id: "trade-pnl", class: cls(cents)}, money(cents / 100, true)), ` · ${wins} wins`));
    // the DOM holds at most `limit` rows (a year of four strategies has ~2,000 trades); the sums are of all
    const more = rows.length > limit ? h("button", {id: "trade-more", onclick: () => { limit = Infinity; draw(); }},
      `show all ${rows.length} (${rows.length - limit} more)`) : null;
    holder.replaceChildren(table(cols, rows.slice(0, limit), {
      id: r => r.trade_id, class: "trades",
      sort: c => { if (!c.k || c.k === "legs") return; sortDir = sortKey === c.k ? -sortDir : 1; sortKey = c.k; draw(); },
      click: r => { if (r.decision_id) location.hash = `#/s/${sid}/decision/${encodeURIComponent(r.decision_id)}`; },
    }), more || "");
  }
  let limit = 250;
  draw();
}

async function equityCharts(sid, data) {
  const eqEl = $("#eq-chart"), ddEl = $("#dd-chart");
  if (!eqEl) return;
  const width = () => Math.max(400, eqEl.clientWidth || 900);
  const full = [data.t[0], data.t[data.t.length - 1]];
  $("#eq-note").textContent = `(${data.what === "bar" ? "per bar" : "per session"}: ${data.points.toLocaleString()} of ` +
    `${data.points_total.toLocaleString()} points drawn; max drawdown ${money(data.max_drawdown)})`;
  const sync = uPlot.sync("eq");
  let applying = true, timer = null;  // building the charts sets their scales: no refetch for that
  const fmtY = (u, vals) => vals.map(v => v === null ? "" : Math.round(v).toLocaleString("en-US"));
  const tzDate = ts => uPlot.tzDate(new Date(ts * 1e3), "America/New_York");
  let shown = [data.t[0], data.t[data.t.length - 1]];
  function onScale(u, key) {
    if (key !== "x" || applying) return;
    const {min, max} = u.scales.x;
    if (Math.abs(min - shown[0]) < 1e-3 && Math.abs(max - shown[1]) < 1e-3) return;  // what is drawn already
    shown = [min, max];
    const other = u === eq ? dd : eq;
    applying = true; other.setScale("x", {min, max}); applying = false;
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const full_ = min <= full[0] && max >= full[1];
      const q = full_ ? "" : `&lo=${min}&hi=${max}`;
      const d = await api(`/api/run/${sid}/equity?points=${Math.round(width())}${q}`);
      applying = true;
      eq.setData([d.t, d.equity], false); dd.setData([d.t, d.drawdown], false);
      eq.setScale("x", {min, max}); dd.setScale("x", {min, max});
      applying = false;
      eqEl.dataset.points = d.points;
    }, 120);
  }
  const common = {width: width(), tzDate, cursor: {sync: {key: sync.key}, drag: {x: true, y: false}},
    hooks: {setScale: [onScale]}};
  const eq = new uPlot(Object.assign({}, common, {height: 300, title: "equity ($)",
    series: [{}, {label: "equity", stroke: "#1f5fa8", width: 1.3, value: (u, v) => money(v)}],
    axes: [{}, {values: fmtY, size: 70}]}), [data.t, data.equity], eqEl);
  const dd = new uPlot(Object.assign({}, common, {height: 150, title: "drawdown ($)",
    series: [{}, {label: "drawdown", stroke: "#c0392b", fill: "rgba(192,57,43,.25)", width: 1, value: (u, v) => money(v)}],
    axes: [{}, {values: fmtY, size: 70}]}), [data.t, data.drawdown], ddEl);
  eqEl.dataset.points = data.points;
  applying = false;
  S.charts.push(eq, dd);
  [eqEl, ddEl].forEach(el => el.addEventListener("dblclick", () => {
    applying = true; eq.setScale("x", {min: full[0], max: full[1]}); applying = false;
    shown = [NaN, NaN]; onScale(eq, "x");
  }));
  window.addEventListener("resize", () => { eq.setSize({width: width(), height: 300}); dd.setSize({width: width(), height: 150}); });
}

// one day's decisions, and one decision's chain slice; shared by the run page and the live page
function dayPicker(box, chainBox, days, base, hashBase) {
  const select = h("select", {id: "day", onchange: e => { location.hash = `${hashBase}/day/${e.target.value}`; }},
    days.map(d => h("option", {value: d.day}, `${d.day}  (${d.decisions} decisions, ${d.trades} trade)`)));
  const step = k => () => { const i = select.selectedIndex + k; if (i >= 0 && i < days.length) location.hash = `${hashBase}/day/${days[i].day}`; };
  const list = h("div", {});
  box.replaceChildren(h("div", {class: "filters"}, h("button", {onclick: step(-1)}, "◀"), select,
    h("button", {onclick: step(1)}, "▶")), list);
  let shownDay = null;
  async function showDay(day, pick) {
    if (!day) { list.replaceChildren(h("p", {class: "muted"}, "no decisions")); return; }
    select.value = day;
    if (shownDay !== day) {
      const r = await api(`${base}/decisions?day=${day}`);
      shownDay = day;
      decisionList(list, r.decisions, chainBox, base, id => `${hashBase}/decision/${encodeURIComponent(id)}`);
    }
    if (pick) {
      const tr = list.querySelector(`tr[data-id="${CSS.escape(pick)}"]`);
      if (tr) tr.click();
    }
  }
  return {go: async (sub) => {
    try {
      if (sub[0] === "day") await showDay(sub[1]);
      else if (sub[0] === "decision") await showDay(dayOf(sub[1], days), sub[1]);
      else await showDay(days.length ? days[0].day : null);
    } catch (e) { list.replaceChildren(err(e)); }
  }};
}
function dayOf(decisionId, days) {
  // decision ids read <strategy>-<YYYYMMDD>T<HHMM>-<n>
  const m = /-(\d{4})(\d{2})(\d{2})T\d{4}/.exec(decisionId);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : (days.length ? days[0].day : null);
}

function decisionList(box, decisions, chainBox, base, linkOf) {
  const detail = h("div", {id: "decision-detail"});
  box.replaceChildren(table([
    {label: "time", f: r => tm(r.decided_at).slice(11)}, {k: "strategy", label: "strategy"},
    {label: "action", f: r => h("span", {class: "badge " + r.action}, r.action)}, {k: "reason", label: "reason"},
    {label: "candidates", n: 1, f: r => r.candidates.length}, {k: "chosen_expiry", label: "expiry"},
  ], decisions, {id: r => r.decision_id, class: "decisions", click: (r, tr) => {
    box.querySelectorAll("tr.sel").forEach(x => x.classList.remove("sel")); tr.classList.add("sel");
    if (linkOf && location.hash !== linkOf(r.decision_id)) history.replaceState(null, "", linkOf(r.decision_id));
    showDecision(detail, chainBox, r, base);
  }}), detail);
  if (!decisions.length) box.replaceChildren(h("p", {class: "muted"}, "no decisions that day"));
}

function showDecision(box, chainBox, d, base) {
  const keys = new Set();
  d.candidates.forEach(c => Object.keys(c.details || {}).forEach(k => keys.add(k)));
  const pick = ["expiry", "dte", "short_strike", "long_strike", "short_delta", "long_delta", "mid_credit", "bid_ask_width"]
    .filter(k => keys.has(k));
  box.replaceChildren(h("h2", {}, `Decision ${d.decision_id}`),
    h("p", {}, h("span", {class: "badge " + d.action}, d.action), " ", d.reason),
    table([{label: "#", f: (r, i) => i}, {k: "description", label: "candidate"}, {k: "credit", label: "credit", n: 1},
      {label: "score", n: 1, f: r => fixed(r.score, 4)},
      ...pick.map(k => ({label: k.replace(/_/g, " "), n: 1, f: r => (r.details || {})[k]})),
      {label: "why not / note", f: r => r.reason || r.note || ""}],
    d.candidates, {class: "cand", rowClass: r => d.candidates.indexOf(r) === d.chosen ? "chosen" : ""}));
  if (d.snapshot_id !== null && d.snapshot_id !== undefined) loadChain(chainBox, base, d.decision_id, null);
  else chainBox.replaceChildren(h("p", {class: "muted"}, "no chain snapshot stored with this decision"));
}

async function loadChain(box, base, decisionId, expiry) {
  let c;
  try {
    c = await api(`${base}/chain/${encodeURIComponent(decisionId)}` + (expiry ? `?expiry=${expiry}` : ""));
  } catch (e) { box.replaceChildren(err(e)); return; }
  const sel = h("select", {id: "chain-expiry", onchange: e => loadChain(box, base, decisionId, e.target.value)},
    c.expiries.map(x => h("option", {value: x, selected: x === c.expiry}, x)));
  const smile = h("div", {id: "smile"});
  const ladder = h("div", {class: "scroll", id: "ladder"});
  box.replaceChildren(h("h2", {}, `Chain slice at ${tm(c.taken_at)}: ${c.underlying} ${fixed(c.underlying_price, 2)}`),
    h("div", {class: "filters"}, h("label", {}, "expiry ", sel),
      h("span", {class: "muted"}, "chosen legs marked (ratio: + bought, − sold)")),
    h("div", {class: "row"}, h("div", {class: "panel"}, smile), ladder));
  const k = c.strikes.map(s => s.strike);
  const iv = side => c.strikes.map(s => s[side] && s[side].iv !== null ? s[side].iv * 100 : null);
  const chosen = c.strikes.map(s => ["put", "call"].map(x => s[x] && s[x].chosen ? s[x].iv * 100 : null).find(v => v !== null) ?? null);
  const old = S.charts.findIndex(x => x.root.parentNode === smile);
  const u = new uPlot({width: Math.max(360, smile.clientWidth || 600), height: 300, title: "implied volatility by strike (%)",
    scales: {x: {time: false}},
    series: [{label: "strike"}, {label: "put IV", stroke: "#c0392b", spanGaps: true},
      {label: "call IV", stroke: "#1f5fa8", spanGaps: true},
      {label: "chosen", stroke: "#e69500", width: 0, points: {show: true, size: 11, fill: "#e69500"}}],
    axes: [{}, {size: 50}]}, [k, iv("put"), iv("call"), chosen], smile);
  if (old >= 0) S.charts.splice(old, 1);
  S.charts.push(u);
  // the strike ladder: puts left, calls right; a vertical line at the underlying
  const spot = c.underlying_price;
  const q = (s, side) => s[side] || {};
  const rows = c.strikes.slice();
  ladder.replaceChildren(table([
    {label: "put Δ", n: 1, f: s => fixed(q(s, "put").delta, 3)}, {label: "put IV", n: 1, f: s => pct(q(s, "put").iv)},
    {label: "bid", n: 1, f: s => fixed(q(s, "put").bid, 2)}, {label: "ask", n: 1, f: s => fixed(q(s, "put").ask, 2)},
    {label: "put leg", f: s => q(s, "put").chosen ? h("b", {class: "leg"}, legText(q(s, "put").ratio)) : ""},
    {label: "strike", n: 1, f: s => h("b", {}, s.strike)},
    {label: "call leg", f: s => q(s, "call").chosen ? h("b", {class: "leg"}, legText(q(s, "call").ratio)) : ""},
    {label: "bid", n: 1, f: s => fixed(q(s, "call").bid, 2)}, {label: "ask", n: 1, f: s => fixed(q(s, "call").ask, 2)},
    {label: "call IV", n: 1, f: s => pct(q(s, "call").iv)}, {label: "call Δ", n: 1, f: s => fixed(q(s, "call").delta, 3)},
  ], rows, {class: "ladder", rowClass: s => (q(s, "put").chosen || q(s, "call").chosen ? "chosen" : "") +
    (Math.abs(s.strike - spot) === Math.min(...rows.map(r => Math.abs(r.strike - spot))) ? " atm" : "")}));
  const first = ladder.querySelector("tr.chosen");
  if (first) ladder.scrollTop = Math.max(0, first.offsetTop - 120);
}
function legText(r) { return r === null || r === undefined ? "chosen" : (r > 0 ? `+${r}` : `${r}`); }

// ------------------------------------------------------------------ live account
function livePage(root, src, sub) {
  S.current = {sid: src.id, kind: "live", onroute: () => {}};
  const head = h("div", {});
  const body = h("div", {});
  const chainBox = h("div", {id: "chain"});
  root.append(head, body, chainBox);
  head.append(h("h1", {}, h("span", {id: "live-dot"}), src.run_id, " ", h("span", {class: "muted"}, src.account ? "account" : "paper run")),
    h("p", {class: "muted", id: "live-status"}, "connecting…"));
  if (S.actions) {
    head.append(h("div", {class: "filters"},
      h("button", {class: "danger", id: "btn-kill", onclick: () => action(src, "kill")}, "Kill switch"),
      h("button", {class: "danger", id: "btn-flatten", onclick: () => action(src, "flatten")}, "Flatten"),
      h("span", {class: "muted", id: "action-result"})));
  }
  let last = null, selected = null;
  const render = (v) => {
    last = v;
    renderLive(body, v, src, chainBox, id => { selected = id; }, selected);
    $("#live-status").textContent = `session ${v.day || "–"} · last bar ${tm(v.bar_done_at) || "–"}` +
      (v.completed_today ? " (session complete)" : "") + ` · updated ${new Date().toLocaleTimeString()} · journal rows read ${v.rows_read}`;
    document.body.dataset.liveVersion = v.version;
  };
  api(`/api/live/${src.id}/state`).then(render).catch(e => body.replaceChildren(err(e)));
  const es = new EventSource(`/api/live/${src.id}/stream`);
  S.live = es;
  es.addEventListener("state", e => { render(JSON.parse(e.data)); });
  es.onopen = () => { const d = $("#live-dot"); if (d) d.classList.add("on"); };
  es.onerror = () => { const d = $("#live-dot"); if (d) d.classList.remove("on"); };
}

function renderLive(box, v, src, chainBox, onSelect, selected) {
  const g = v.greeks || {};
  const r = v.risk || {};
  const cards = h("div", {class: "cards", id: "live-cards"},
    card("cash", "cash", money(v.cash)), card("equity", "equity (marked)", money(v.equity)),
    card("realized_pnl", "realized P&L", money(v.realized_pnl, true), cls(v.realized_pnl)),
    card("realized_today", "realized today", money(v.realized_today, true), cls(v.realized_today)),
    card("unrealized_pnl", "unrealized P&L", money(v.unrealized_pnl, true), cls(v.unrealized_pnl)),
    card("today_pnl", "today's P&L", money(v.today_pnl, true), cls(v.today_pnl)),
    card("open_count", "open trades", v.open.length), card("closed_trades", "closed trades", v.closed_trades),
    card("delta", "delta (shares / $)", v.greeks ? `${fixed(g.delta_shares, 1)} / ${money(g.delta_dollars)}` : "–"),
    card("gamma", "gamma $ per 1%", v.greeks ? money(g.gamma_dollars) : "–"),
    card("theta", "theta $/day", v.greeks ? money(g.theta_dollars, true) : "–"),
    card("vega", "vega $/vol pt", v.greeks ? money(g.vega_dollars, true) : "–"));
  const risk = h("div", {class: "panel", id: "risk"},
    h("div", {}, "kill switch: ", r.kill_switch ? h("span", {class: "badge bad", id: "kill-state"}, r.kill_switch) : h("span", {class: "badge ok", id: "kill-state"}, "armed (not tripped)")),
    h("div", {}, "new risk: ", r.fail_closed ? h("span", {class: "badge bad"}, "stopped (fail closed): " + r.fail_closed) : h("span", {class: "badge ok"}, "allowed")),
    r.flatten_requested ? h("div", {}, h("span", {class: "badge bad"}, "flatten requested: acts at the next bar")) : null,
    (r.notch || []).map(n => h("div", {}, `risk ladder ${n.strategy}: notch ${n.notch} of 0..${n.of - 1} ` +
      `(limit ${money(n.limit)} a period)`)),
    table([{k: "limit", label: "limit"}, {label: "used", n: 1, f: x => x.used === null ? "" : x.used},
      {label: "of", n: 1, f: x => x.of}, {label: "", f: x => {
        const f = x.used === null || !x.of ? 0 : Math.min(1, x.used / x.of);
        return h("div", {class: "bar" + (f >= 0.8 ? " hot" : "")}, h("span", {style: `width:${(f * 100).toFixed(0)}%`}));
      }}], r.limits || []));
  const pos = table([
    {k: "trade_id", label: "trade"}, {k: "strategy", label: "strategy"}, {label: "opened", f: t => tm(t.opened_at)},
    {k: "expiry", label: "expiry"}, {k: "contracts", label: "qty", n: 1},
    {label: "legs (mark)", c: () => "wrap", f: t => (t.legs || []).map(l => `${l.ratio > 0 ? "+" : ""}${l.ratio} ${l.occ} @${fixed(l.mark, 2)}`).join("  ")},
    {label: "entry", n: 1, f: t => fixed(t.entry_price, 2)}, {label: "mark", n: 1, f: t => fixed(t.mark, 2)},
    {label: "unrealized", n: 1, f: t => money(t.unrealized, true), c: t => cls(t.unrealized)},
    {label: "Δ sh", n: 1, f: t => t.greeks ? fixed(t.greeks.delta_shares, 1) : ""},
    {label: "Δ $", n: 1, f: t => t.greeks ? money(t.greeks.delta_dollars) : ""},
    {label: "Γ $/1%", n: 1, f: t => t.greeks ? money(t.greeks.gamma_dollars) : ""},
    {label: "Θ $/day", n: 1, f: t => t.greeks ? money(t.greeks.theta_dollars, true) : ""},
    {label: "V $/pt", n: 1, f: t => t.greeks ? money(t.greeks.vega_dollars, true) : ""},
  ], v.open, {id: t => t.trade_id, class: "positions"});
  const orders = table([{k: "order_id", label: "order"}, {k: "strategy", label: "strategy"},
    {label: "side", f: o => o.opens ? "open" : "close"}, {k: "order_type", label: "type"}, {k: "tif", label: "tif"},
    {label: "filled", n: 1, f: o => `${o.filled_quantity}/${o.quantity}`}, {label: "limit", n: 1, f: o => o.limit_price},
    {k: "status", label: "status"}, {label: "since", f: o => tm(o.created_at)}], v.working_orders, {class: "orders"});
  const decisions = h("div", {});
  decisionList(decisions, v.decisions, chainBox, `/api/live/${src.id}`, null);
  if (selected) { const tr = decisions.querySelector(`tr[data-id="${CSS.escape(selected)}"]`); if (tr) tr.classList.add("sel"); }
  decisions.querySelectorAll("tr[data-id]").forEach(tr => tr.addEventListener("click", () => onSelect(tr.dataset.id)));
  const log = h("div", {class: "log", id: "live-log"}, v.log.length ? v.log.slice().reverse().map(l =>
    h("div", {"data-id": l.log_id}, `${tm(l.at)}  ${l.kind}: ${l.message}`)) : h("span", {class: "muted"}, "(nothing logged yet)"));
  const detail = box.querySelector("#decision-detail");
  box.replaceChildren(cards,
    h("div", {class: "row"}, h("div", {}, h("h2", {}, "Risk state"), risk),
      h("div", {}, h("h2", {}, "Live log"), log)),
    h("h2", {}, `Open positions `, h("span", {class: "muted"}, v.marks_at ? `marked ${tm(v.marks_at)} at mid; greeks from the last 5-minute chain; spot ${fixed(v.spot, 2)}` : "no marks yet")),
    h("div", {class: "scroll"}, pos),
    h("h2", {}, "Working orders"), orders,
    h("h2", {}, `Today's decisions (${v.day || "–"})`), decisions);
  if (detail && selected) { const nd = decisions.querySelector("#decision-detail"); if (nd) nd.replaceWith(detail); }
}

function action(src, kind) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = kind === "kill" ? "Trip the kill switch?" : "Flatten the account?";
  $("#confirm-text").textContent = kind === "kill" ? `No new risk for ${src.run_id} (exits still allowed).`
    : `Close every open trade of ${src.run_id} and trip its kill switch (acts at its next bar).`;
  $("#confirm-reason-row").style.display = kind === "kill" ? "" : "none";
  $("#confirm-token").value = sessionStorage.getItem("sb-token") || "";
  dlg.returnValue = "";
  dlg.onclose = async () => {
    if (dlg.returnValue !== "ok") return;
    const token = $("#confirm-token").value;
    sessionStorage.setItem("sb-token", token);
    const out = $("#action-result");
    try {
      const r = await api(`/api/live/${src.id}/${kind}`, {method: "POST",
        headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`},
        body: JSON.stringify({reason: $("#confirm-reason").value})});
      out.textContent = `${r.action} sent by ${r.by} at ${r.at}`;
    } catch (e) { out.textContent = `refused: ${e.message}`; }
  };
  dlg.showModal();
}

// ------------------------------------------------------------------ sweep
async function sweepPage(root, src) {
  S.current = {sid: src.id, kind: "sweep", onroute: () => {}};
  let v;
  try { v = await api(`/api/sweep/${src.id}`); } catch (e) { root.append(err(e)); return; }
  const m = v.meta;
  const obj = v.objectives;
  root.append(h("h1", {}, `sweep ${m.study || src.label}`), h("p", {class: "muted"}, src.label),
    h("div", {class: "cards", id: "sweep-cards"}, card("sampler", "sampler", m.sampler || ""), card("budget", "budget", m.budget ?? ""),
      card("complete", "complete", m.complete ?? v.trials.filter(t => t.state === "complete").length),
      card("failed", "failed", m.failed ?? 0), card("pareto", "on the front", v.pareto.length),
      card("objectives", "objectives", obj.map(o => `${o.name} (${o.direction === "minimize" ? "min" : "max"})`).join(", "))));
  const front = new Set(v.pareto);
  const plot = h("canvas", {id: "pareto", width: 640, height: 380});
  const imp = h("div", {id: "importance"});
  root.append(h("div", {class: "row"},
    h("div", {}, h("h2", {}, obj.length > 1 ? `Pareto front: ${obj[0].name} vs ${obj[1].name}` : `${obj[0] ? obj[0].name : "objective"} by trial`),
      h("div", {class: "panel"}, plot)),
    h("div", {}, h("h2", {}, "Parameter importance"), imp)));
  drawScatter(plot, v.trials.filter(t => t.state === "complete" && t.values.every(x => x !== null)), obj, front);
  imp.replaceChildren(h("p", {class: "muted"}, "computing importances from the study…"));
  api(`/api/sweep/${src.id}/importance`).then(ib => {
    const parts = Object.entries(ib.objectives || {}).map(([name, vals]) => h("div", {class: "panel"}, h("b", {}, name),
      table([{k: "p", label: "parameter"}, {label: "importance (PED-ANOVA)", n: 1, f: r => fixed(r.v, 3)},
        {label: "", f: r => h("div", {class: "bar"}, h("span", {style: `width:${(r.v * 100).toFixed(0)}%`}))}],
      Object.entries(vals).map(([p, x]) => ({p, v: x})), {class: "importance"})));
    imp.replaceChildren(...(parts.length ? parts : [h("p", {class: "muted"}, ib.note || "no importances")]));
  }).catch(e => imp.replaceChildren(err(e)));
  const holder = h("div", {class: "scroll"});
  root.append(h("h2", {}, `Trials (${v.trials.length})`), holder);
  let sortKey = obj.length ? "o0" : "trial", dir = obj.length && obj[0].direction === "minimize" ? 1 : -1;
  const cols = [{k: "trial", label: "trial", n: 1}, {k: "state", label: "state"},
    {label: "front", f: t => front.has(t.trial) ? "★" : ""},
    ...v.params.map(p => ({k: "p:" + p, label: p, n: 1, f: t => t.params[p]})),
    ...obj.map((o, i) => ({k: "o" + i, label: o.name, n: 1, f: t => t.values[i] === null ? "" : Number(t.values[i]).toPrecision(6)})),
    {k: "final_equity", label: "final equity", n: 1, f: t => money(t.final_equity)}, {k: "trades", label: "trades", n: 1},
    {k: "seconds", label: "s", n: 1, f: t => fixed(t.seconds, 1)}, {k: "error", label: "error"}];
  const val = (t, k) => k.startsWith("o") && k !== "o" ? t.values[Number(k.slice(1))] : k.startsWith("p:") ? num(t.params[k.slice(2)]) ?? t.params[k.slice(2)] : t[k];
  function draw() {
    const rows = v.trials.slice().sort((a, b) => {
      let x = val(a, sortKey), y = val(b, sortKey);
      x = x === null || x === undefined ? Infinity * dir : x; y = y === null || y === undefined ? Infinity * dir : y;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    const more = rows.length > limit ? h("button", {onclick: () => { limit = Infinity; draw(); }},
      `show all ${rows.length} trials`) : "";
    holder.replaceChildren(table(cols, rows.slice(0, limit), {class: "trials", id: t => t.trial,
      rowClass: t => front.has(t.trial) ? "chosen" : "",
      sort: c => { if (!c.k) return; dir = sortKey === c.k ? -dir : 1; sortKey = c.k; draw(); }}), more);
  }
  let limit = 500;
  draw();
}

function drawScatter(cv, trials, obj, front) {
  const ctx = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 70, B = 40, T = 10, R = 10;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px sans-serif"; ctx.fillStyle = "#333";
  if (!trials.length) { ctx.fillText("no complete trial", W / 2 - 40, H / 2); return; }
  const two = obj.length > 1;
  const xs = trials.map(t => two ? t.values[0] : t.trial), ys = trials.map(t => two ? t.values[1] : t.values[0]);
  const ext = a => { let lo = Math.min(...a), hi = Math.max(...a); if (lo === hi) { lo -= 1; hi += 1; } const p = (hi - lo) * 0.05; return [lo - p, hi + p]; };
  const [x0, x1] = ext(xs), [y0, y1] = ext(ys);
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => H - B - (y - y0) / (y1 - y0) * (H - B - T);
  ctx.strokeStyle = "#ccc"; ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    ctx.fillText(xv.toPrecision(4), X(xv) - 15, H - B + 15); ctx.fillText(yv.toPrecision(4), 4, Y(yv) + 4);
  }
  ctx.fillText(two ? obj[0].name : "trial", W / 2, H - 6);
  ctx.save(); ctx.translate(12, H / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(two ? obj[1].name : obj[0].name, 0, 0); ctx.restore();
  const pts = trials.map((t, i) => ({t, x: X(xs[i]), y: Y(ys[i])}));
  if (two) {
    const f = pts.filter(p => front.has(p.t.trial)).sort((a, b) => a.x - b.x);
    ctx.strokeStyle = "#e69500"; ctx.lineWidth = 1.5; ctx.beginPath();
    f.forEach((p, i) => i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)); ctx.stroke();
  }
  for (const p of pts) {
    ctx.beginPath(); ctx.arc(p.x, p.y, front.has(p.t.trial) ? 5 : 3, 0, 2 * Math.PI);
    ctx.fillStyle = front.has(p.t.trial) ? "#e69500" : "rgba(31,95,168,.6)"; ctx.fill();
  }
  cv.title = "orange: the Pareto front (non-dominated trials)";
}

boot().catch(e => $("#page").replaceChildren(err(e)));
