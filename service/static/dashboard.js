// The dashboard: the service's own HTTP API and its Server-Sent Events, nothing else.
"use strict";

const rows = new Map();   // ticker -> latest prediction + page-local score
let sortKey = "ticker", sortUp = true, selected = null, dirty = true;
let chart = null, errors = null, points = [];

const $ = (id) => document.getElementById(id);
const fmt = (x, d) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : x.toFixed(d);

function skillOf(r) { return r.zero > 0 ? 1 - r.model / r.zero : null; }

function apply(p) {  // one prediction, in stream order
  const before = rows.get(p.ticker);
  const r = { ...p, model: before ? before.model : 0, zero: before ? before.zero : 0 };
  if (before && before.steps < p.steps) {  // score the previous forecast: test, then show
    const realised = Math.log(p.last_price / before.last_price);
    const e = (realised - before.prediction) ** 2, z = realised ** 2;
    r.model += e; r.zero += z;
  }
  r.skill = skillOf(r);
  rows.set(p.ticker, r);
  if (p.ticker === selected) addPoint(p);
  dirty = true;
}

function render() {
  if (!dirty) return;
  dirty = false;
  const f = $("filter").value.trim().toUpperCase();
  const list = [...rows.values()].filter((r) => r.ticker.includes(f));
  list.sort((a, b) => {
    const x = a[sortKey] ?? -Infinity, y = b[sortKey] ?? -Infinity;
    return (x < y ? -1 : x > y ? 1 : 0) * (sortUp ? 1 : -1);
  });
  $("table").tBodies[0].innerHTML = list.map((r) =>
    `<tr data-ticker="${r.ticker}" class="${r.ticker === selected ? "selected" : ""}">` +
    `<td>${r.ticker}</td><td>${fmt(r.last_price, 4)}</td><td>${fmt(r.predicted_price, 4)}</td>` +
    `<td class="${r.prediction >= 0 ? "up" : "down"}">${fmt(r.prediction * 1e4, 2)}</td>` +
    `<td>${r.steps}</td><td>${fmt(r.skill, 3)}</td></tr>`).join("");
}

// ---- the chart of one ticker

function series() {
  const x = [], price = [], predicted = [], errModel = [], errZero = [];
  const window = 20, em = [], ez = [];
  points.forEach((p, i) => {
    x.push(i);
    price.push(p.last_price);
    const prev = points[i - 1];
    predicted.push(prev ? prev.predicted_price : null);
    if (prev) {
      const r = Math.log(p.last_price / prev.last_price);
      em.push((r - prev.prediction) ** 2); ez.push(r * r);
      if (em.length > window) { em.shift(); ez.shift(); }
    }
    const mean = (a) => a.length ? a.reduce((t, v) => t + v, 0) / a.length : null;
    errModel.push(mean(em)); errZero.push(mean(ez));
  });
  return [[x, price, predicted], [x, errModel, errZero]];
}

function draw() {
  const [prices, errs] = series();
  const width = $("right").clientWidth - 32;
  if (!chart) {
    chart = new uPlot({ width, height: 300, scales: { x: { time: false } },
      axes: [{}, { size: 70 }],
      series: [{ label: "tick" }, { label: "price", stroke: "#1d5fbf", width: 2 },
               { label: "predicted", stroke: "#e08a1e", width: 1.5, dash: [6, 4] }] },
      prices, $("price-chart"));
    errors = new uPlot({ width, height: 180, scales: { x: { time: false } },
      axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => v.toExponential(1)) }],
      series: [{ label: "tick" }, { label: "model sq. error", stroke: "#c0392b" },
               { label: "zero forecast sq. error", stroke: "#7a8594" }] },
      errs, $("error-chart"));
  } else {
    chart.setData(prices);
    errors.setData(errs);
  }
}

function addPoint(p) {
  points.push(p);
  if (points.length > 500) points.shift();
  draw();
}

async function select(ticker) {
  selected = ticker;
  dirty = true;
  $("chart-title").textContent = `${ticker}: price and prediction`;
  const r = await fetch(`/v1/predictions/${ticker}/history?limit=300`);
  points = r.ok ? (await r.json()).history : [];
  draw();
}

// ---- status, data and events

let lastApplied = null, lastAt = null;

async function status() {
  try {
    const r = await fetch("/readyz"), s = await r.json(), now = performance.now();
    const pill = $("state");
    pill.textContent = s.ready ? "ready" : (s.reasons[0] || "not ready");
    pill.className = "pill " + (s.ready ? "ready" : s.connected ? "busy" : "down");
    if (lastApplied !== null) {
      $("rate").textContent = fmt((s.applied - lastApplied) / ((now - lastAt) / 1000), 0);
    }
    lastApplied = s.applied; lastAt = now;
    $("lag").textContent = s.lag ?? "?";
    $("tickers").textContent = s.tickers;
    $("model").textContent = s.model_version;
    $("fresh").textContent = `${fmt(s.snapshot_age_s, 1)} s`;
    const q = await (await fetch("/v1/quality?per_ticker=false")).json();
    $("skill").textContent = fmt(q.overall.skill, 3);
  } catch (e) {
    $("state").textContent = "service unreachable";
    $("state").className = "pill down";
  }
}

async function start() {
  const all = await (await fetch("/v1/predictions")).json();
  Object.values(all.predictions).forEach(apply);
  const events = new EventSource("/v1/stream");  // reconnects with Last-Event-ID itself
  events.addEventListener("batch", (e) => JSON.parse(e.data).predictions.forEach(apply));
  status();
  setInterval(status, 2000);
  setInterval(render, 500);
  render();
}

$("table").tHead.addEventListener("click", (e) => {
  const key = e.target.dataset.key;
  if (!key) return;
  sortUp = key === sortKey ? !sortUp : true;
  sortKey = key;
  dirty = true;
  render();
});
$("table").tBodies[0].addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (tr) select(tr.dataset.ticker);
});
$("filter").addEventListener("input", () => { dirty = true; render(); });
window.addEventListener("resize", () => {
  if (chart) {
    const width = $("right").clientWidth - 32;
    chart.setSize({ width, height: 300 });
    errors.setSize({ width, height: 180 });
  }
});
start();
