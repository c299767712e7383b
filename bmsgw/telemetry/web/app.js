// bmsgw dashboard: renders /api/state, follows /api/events (SSE), plots /api/history. No dependencies.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const HISTORY_POINTS = 720;
const HISTORY_REFRESH_MS = 60000;
const STALE_AFTER_MS = 5000;

const REASONS = {
  config: "configured maximum",
  cell_voltage_high: "high cell voltage",
  cell_voltage_low: "low cell voltage",
  cell_overvoltage: "cell over-voltage",
  cell_undervoltage: "cell under-voltage",
  temperature_high: "high temperature",
  temperature_low: "low temperature",
  overtemperature: "over-temperature",
  undertemperature: "under-temperature",
  cold_charge: "too cold to charge",
  overcurrent: "over-current",
  soc_full: "battery full",
  soc_empty: "battery empty",
  bms_request: "pack BMS request",
  fault: "fault",
  comm_lost: "communication lost",
  recovery: "ramping up after recovery",
  pack_voltage: "pack voltage",
  ems: "EMS command",
  reserve: "backup reserve",
  schedule: "time-of-use schedule",
  cell_imbalance: "cell imbalance",
  sensor_fault: "sensor fault",
  thermal_runaway: "temperature rising fast",
};
const REASON_CLASS = {
  config: "ok", recovery: "info", ems: "info", reserve: "info", schedule: "info",
  soc_full: "info", soc_empty: "warn",
  cell_voltage_high: "warn", cell_voltage_low: "warn", temperature_high: "warn", temperature_low: "warn",
  cell_imbalance: "warn", thermal_runaway: "bad", sensor_fault: "bad",
};
const PACK_STATUS = {
  online: ["ok", "online"],
  never_seen: ["", "no data yet"],
  stale: ["warn", "stale"],
  implausible: ["bad", "implausible data"],
  frozen: ["bad", "frozen BMS data"],
};
const LEVEL_CLASS = { warning: "warn", alarm: "bad", fault: "fault" };
const STAGE_TEXT = { bulk: "bulk charge", absorption: "absorption", float: "float" };
// Multi-pack service (bmsgw/multipack.py); "running" is the normal case and shows nothing.
const SERVICE = {
  ramping: ["info", "joining the limits"],
  joining: ["warn", "held out: voltage mismatch"],
  isolated: ["bad", "isolated"],
  absent: ["", "absent"],
};

let info = null;           // static gateway info from the first state
let lastState = null;
let lastUpdate = 0;        // Date.now() of the newest state
let history = null;
let historyTab = "soc";

// --- small DOM helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid) e.append(kid);
  return e;
}

function fill(id, ...kids) {
  const e = document.getElementById(id);
  e.replaceChildren(...kids.flat().filter(Boolean));
  return e;
}

// --- formatting ----------------------------------------------------------------------------------------

const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const fixed = (x, d) => (isNum(x) ? x.toFixed(d) : "–");
const pct = (x, d = 0) => (isNum(x) ? (x * 100).toFixed(d) : "–");
function power(w) {
  if (!isNum(w)) return ["–", "W"];
  return Math.abs(w) >= 1000 ? [(w / 1000).toFixed(2), "kW"] : [w.toFixed(0), "W"];
}
function ago(seconds) {
  if (!isNum(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
const words = (code) => String(code).replace(/_/g, " ");
const reasonText = (r) => REASONS[r] || words(r);
const hoursMinutes = (s) => (isNum(s) ? `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min` : "–");
function clock(stamp) {
  const d = new Date(stamp * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function kpi(label, value, unit, sub) {
  return h("div", { class: "kpi" },
    h("div", { class: "k", text: label }),
    h("div", { class: "v" }, value, unit ? h("small", { text: unit }) : null),
    sub ? h("div", { class: "s", text: sub }) : null);
}

// --- sections ------------------------------------------------------------------------------------------

function socGauge(soc) {
  const r = 66, c = 2 * Math.PI * r;
  const frac = isNum(soc) ? Math.max(0, Math.min(1, soc)) : 0;
  const color = !isNum(soc) ? "var(--muted)" : soc < 0.15 ? "var(--bad)" : soc < 0.3 ? "var(--warn)" : "var(--ok)";
  return s("svg", { class: "gauge", viewBox: "0 0 168 168", role: "img", "aria-label": `State of charge ${pct(soc, 1)} %` },
    s("circle", { class: "track", cx: 84, cy: 84, r }),
    s("circle", {
      class: "level", cx: 84, cy: 84, r, stroke: color, transform: "rotate(-90 84 84)",
      "stroke-dasharray": `${(frac * c).toFixed(1)} ${c.toFixed(1)}`,
    }),
    s("text", { class: "pct", id: "soc-value", x: 84, y: 90, "text-anchor": "middle", text: isNum(soc) ? `${pct(soc, soc >= 0.9995 ? 0 : 1)}%` : "–" }),
    s("text", { class: "lbl", x: 84, y: 112, "text-anchor": "middle", text: "state of charge" }));
}

function renderOverview(st) {
  const [pw, pu] = power(st.power);
  let flow;
  if (!st.usable) {
    flow = h("div", { class: "flow nodata" }, h("span", { class: "arrow", text: "⚠" }), "No pack data — inverter limits in the safe state");
  } else if (isNum(st.current) && st.current > 0.5) {
    flow = h("div", { class: "flow charging" }, h("span", { class: "arrow", text: "▲" }), `Charging · ${pw} ${pu}`);
  } else if (isNum(st.current) && st.current < -0.5) {
    flow = h("div", { class: "flow discharging" }, h("span", { class: "arrow", text: "▼" }), `Discharging · ${pw.replace("-", "")} ${pu}`);
  } else {
    flow = h("div", { class: "flow idle" }, h("span", { class: "arrow", text: "■" }), "Idle");
  }
  const vmin = st.cell_v_min, vmax = st.cell_v_max;
  const tmin = st.cell_t_min, tmax = st.cell_t_max;
  const multi = st.packs.length > 1;
  const where = (x) => (x ? (multi ? `${x.pack} #${x.cell}` : `cell ${x.cell}`) : "");
  const kpis = h("div", { class: "kpis" },
    kpi("Voltage", fixed(st.usable ? st.voltage : null, 2), "V"),
    kpi("Current", fixed(st.usable ? st.current : null, 1), "A", "+ = charging"),
    kpi("Power", st.usable ? pw : "–", pu),
    kpi("Temperature", fixed(st.usable ? st.temperature : null, 1), "°C",
      tmin && tmax ? `${tmin.value.toFixed(1)} … ${tmax.value.toFixed(1)} °C` : null),
    kpi("Cell min", vmin ? vmin.value.toFixed(3) : "–", "V", where(vmin)),
    kpi("Cell max", vmax ? vmax.value.toFixed(3) : "–", "V", where(vmax)),
    kpi("Cell spread", vmin && vmax ? ((vmax.value - vmin.value) * 1000).toFixed(0) : "–", "mV"),
    kpi("State of health", pct(st.soh, 0), "%"),
    st.forecast ? kpi(st.current >= 0 ? "Time to full" : "Time to reserve",
      hoursMinutes(st.current >= 0 ? st.forecast.time_to_full_s : st.forecast.time_to_empty_s), "",
      st.forecast.basis === "load_profile" ? "learned load profile" : "at the present current") : null,
    kpi("Packs online", `${st.packs_online} / ${st.packs.length}`, "", isNum(st.capacity_ah) && st.capacity_ah > 0 ? `${st.capacity_ah.toFixed(0)} Ah online` : null));
  fill("overview", socGauge(st.soc), h("div", { class: "ov-main" }, flow, kpis));
}

function renderLimits(st) {
  const L = st.limits, th = info.thresholds;
  const row = (name, abbr, lim, unit, digits, max) => {
    const val = lim.value;
    const width = isNum(val) && max ? Math.max(0, Math.min(100, (val / max) * 100)) : null;
    const bar = h("div", { class: "bar" });
    if (width !== null) { const i = h("i"); i.style.width = `${width}%`; bar.append(i); }
    const cls = lim.reason === "comm_lost" || lim.reason === "fault" ? "bad" : REASON_CLASS[lim.reason] || "warn";
    return h("div", { class: "limit" },
      h("div", { class: "name" }, name, h("small", { text: abbr })),
      h("div", { class: "val" }, fixed(val, digits), " ", unit),
      max ? bar : h("div", { class: "nobar" }),
      h("span", { class: `chip why ${cls}`, title: `reason: ${lim.reason}`, text: reasonText(lim.reason) }));
  };
  const flag = (on, yes, no, cls) => h("span", { class: `chip ${on ? cls : "bad"}`, text: on ? yes : no });
  const flags = h("div", { class: "flags" },
    flag(L.charge_enable, "✓ charging allowed", "✕ charging blocked", "ok"),
    flag(L.discharge_enable, "✓ discharging allowed", "✕ discharging blocked", "ok"),
    L.charge_stage ? h("span", { class: "chip info stage", title: "charge-voltage stage: CVL follows it",
      text: `stage: ${STAGE_TEXT[L.charge_stage] || L.charge_stage}` }) : null,
    L.force_charge_1 || L.force_charge_2 ? h("span", { class: "chip warn", text: "force charge requested" }) : null,
    L.full_charge_request ? h("span", { class: "chip info", text: "full charge requested" }) : null);
  document.querySelector("#limits .body").replaceChildren(
    row("Charge current", "CCL", L.ccl, "A", 1, th.max_charge_current_a),
    row("Discharge current", "DCL", L.dcl, "A", 1, th.max_discharge_current_a),
    row("Charge voltage", "CVL", L.cvl, "V", 2, null),
    row("Discharge voltage", "DVL", L.dvl, "V", 2, null),
    flags);
}

function renderAlarms(st) {
  const body = document.querySelector("#alarms .body");
  if (!st.alarms.length) {
    body.replaceChildren(h("div", { class: "all-clear" },
      s("svg", { viewBox: "0 0 24 24", "aria-hidden": "true" },
        s("circle", { cx: 12, cy: 12, r: 10, fill: "none", stroke: "currentColor", "stroke-width": 2 }),
        s("path", { d: "M7 12.5l3.2 3.2L17 9", fill: "none", stroke: "currentColor", "stroke-width": 2.2, "stroke-linecap": "round", "stroke-linejoin": "round" })),
      "No active alarms"));
    return;
  }
  const order = { fault: 0, alarm: 1, warning: 2 };
  const alarms = [...st.alarms].sort((a, b) => order[a.level] - order[b.level] || a.since - b.since);
  body.replaceChildren(h("ul", { class: "alarm-list" }, alarms.map((a) =>
    h("li", { class: "alarm" },
      h("span", { class: `chip ${LEVEL_CLASS[a.level] || "warn"}`, text: a.level }),
      h("span", { class: "what", text: words(a.code) }),
      h("span", { class: "meta", text: [a.pack ? `pack ${a.pack}` : "system", `for ${ago(st.t - a.since)}`, a.detail].filter(Boolean).join(" · ") })))));
}

function renderPack(p, st) {
  const [cls, label] = PACK_STATUS[p.status] || ["", p.status];
  const [scls, slabel] = SERVICE[p.service] || [];
  const smp = p.sample;
  const head = h("div", { class: "pack-head" },
    h("h3", { text: `Pack ${p.id}` }),
    h("span", { class: `chip ${cls}`, text: label }),
    slabel && p.status === "online" ? h("span", { class: `chip service ${scls}`, text: slabel }) : null,
    smp && p.status !== "online" ? h("span", { class: "stale-note", text: `last data ${ago(smp.age_s)} ago` }) : null,
    h("span", { class: "stats" },
      "SOC ", h("b", { text: `${pct(p.soc, 1)} %` }),
      "  ·  SOH ", h("b", { text: `${pct(p.soh, 0)} %` }),
      p.health && isNum(p.health.equivalent_full_cycles)
        ? ["  ·  ", h("b", { class: "cycles", text: fixed(p.health.equivalent_full_cycles, 1) }), " cycles"] : null,
      smp ? ["  ·  ", h("b", { text: `${fixed(smp.voltage, 2)} V` }), "  ·  ", h("b", { text: `${fixed(smp.current, 1)} A` }),
        "  ·  ", h("b", { text: power(smp.power).join(" ") })] : null,
      st.packs.length > 1 && p.status === "online" && isNum(p.share)
        ? ["  ·  share ", h("b", { class: "share", text: `${pct(p.share, 0)} %` })] : null));
  const card = h("section", { class: "card pack", "data-pack": p.id, "aria-label": `Pack ${p.id}` }, head);
  if (!smp) {
    card.append(h("p", { class: "muted", text: "Waiting for the first complete sample from this pack." }));
    return card;
  }
  const v = smp.cell_v.filter(isNum);
  const vmin = Math.min(...v), vmax = Math.max(...v);
  const avg = v.reduce((a, b) => a + b, 0) / (v.length || 1);
  const imin = smp.cell_v.indexOf(vmin), imax = smp.cell_v.indexOf(vmax);
  const spread = vmax - vmin;
  const pad = Math.max(0.01, spread * 0.6);
  const lo = vmin - pad, hi = vmax + Math.max(0.004, spread * 0.1);
  const nbal = smp.balancing.filter(Boolean).length;
  // Active balancing: what each cell gives (from_cell) or receives (to_cell), A.
  const xfers = p.transfers || [];
  const xferText = (x) => `cell ${x.from_cell} → cell ${x.to_cell}, ${fixed(x.current, 1)} A`;
  const gives = (i) => xfers.filter((x) => x.from_cell === i + 1);
  const takes = (i) => xfers.filter((x) => x.to_cell === i + 1);
  card.append(h("div", { class: "cell-summary" },
    h("span", { class: "min" }, "min ", h("b", { text: `${vmin.toFixed(3)} V` }), ` #${imin + 1}`),
    h("span", { class: "max" }, "max ", h("b", { text: `${vmax.toFixed(3)} V` }), ` #${imax + 1}`),
    h("span", {}, "Δ ", h("b", { text: `${(spread * 1000).toFixed(0)} mV` })),
    h("span", {}, "avg ", h("b", { text: `${avg.toFixed(3)} V` })),
    xfers.length
      ? h("span", { class: "xfers" }, "balancing ", h("b", { text: xfers.map(xferText).join(" · ") }))
      : h("span", {}, "balancing ", h("b", { text: nbal ? `${nbal} cell${nbal > 1 ? "s" : ""}` : "off" }))));
  const cells = h("div", { class: "cells", role: "list", "aria-label": "Cell voltages" });
  smp.cell_v.forEach((cv, i) => {
    const bal = smp.balancing[i];
    const out = gives(i), into = takes(i);
    const socTxt = p.cell_soc && isNum(p.cell_soc[i]) ? `, SOC ${pct(p.cell_soc[i], 1)} %` : "";
    const xferTxt = out.map((x) => `, giving ${fixed(x.current, 1)} A to cell ${x.to_cell}`).join("")
      + into.map((x) => `, receiving ${fixed(x.current, 1)} A from cell ${x.from_cell}`).join("");
    const tile = h("div", {
      class: ["cellt", i === imin ? "min" : "", i === imax ? "max" : "", bal ? "bal" : "",
        out.length ? "xout" : "", into.length ? "xin" : ""].join(" ").replace(/ +/g, " ").trim(),
      role: "listitem", title: `Cell ${i + 1}: ${fixed(cv, 3)} V${socTxt}${bal ? ", balancing" : ""}${xferTxt}`,
    });
    const bar = h("i");
    bar.style.height = `${isNum(cv) ? Math.max(4, Math.min(100, ((cv - lo) / (hi - lo)) * 100)) : 0}%`;
    tile.append(h("div", { class: "tube" }, bar), h("span", { class: "mv", text: fixed(cv, 3) }),
      h("span", { class: "idx" }, `#${i + 1}`, bal ? h("span", { class: "b", text: " ⚡" }) : null,
        out.length ? h("span", { class: "x", text: " −" }) : null, into.length ? h("span", { class: "x", text: " +" }) : null));
    cells.append(tile);
  });
  card.append(cells, h("div", { class: "legend" },
    h("span", {}, h("i", { class: "l-min" }), "lowest cell"),
    h("span", {}, h("i", { class: "l-max" }), "highest cell"),
    h("span", {}, h("i", { class: "l-bal" }), "balancing (⚡)"),
    xfers.length ? h("span", {}, h("i", { class: "l-xfer" }), "transfer: gives (−), receives (+)") : null,
    h("span", { text: `bars scaled ${lo.toFixed(3)}–${hi.toFixed(3)} V` })));
  const th = info.thresholds;
  card.append(h("div", { class: "temps", "aria-label": "Temperatures" }, smp.cell_t.map((t, i) => {
    // Flagged where the core starts derating: within the warning margin of the charge limits.
    const hot = isNum(t) && t >= th.charge_temp_max_c - th.temp_warn_margin_c;
    const cold = isNum(t) && t <= th.charge_temp_min_c + th.temp_warn_margin_c;
    return h("span", { class: `temp${hot ? " hot" : ""}${cold ? " cold" : ""}` },
      h("span", { class: "muted", text: `T${i + 1}` }), h("span", { class: "t", text: `${fixed(t, 1)} °C` }));
  })));
  return card;
}

function render(st) {
  lastState = st;
  if (!info) {
    info = st.gateway;
    document.title = `${info.name} · bmsgw`;
    fill("gw-name", info.name);
    fill("build", `bmsgw ${info.version} · core ${info.core} · ${info.chemistry.toUpperCase()}`);
  }
  renderOverview(st);
  renderLimits(st);
  renderAlarms(st);
  fill("packs", st.packs.map((p) => renderPack(p, st)));
}

// --- history chart -------------------------------------------------------------------------------------

const TABS = {
  soc: { label: "SOC", unit: "%", digits: 1, min: 0, max: 100,
    series: (H) => [{ name: "SOC", color: "var(--ok)", values: H.system.soc.map((x) => (isNum(x) ? x * 100 : null)), area: true }] },
  power: { label: "Power", unit: "W", digits: 0, zero: true,
    series: (H) => [{ name: "power (+ charging)", color: "var(--accent)", values: H.system.power, area: true }] },
  current: { label: "Current & limits", unit: "A", digits: 1, zero: true,
    series: (H) => [
      { name: "current", color: "var(--accent)", values: H.system.current },
      { name: "charge limit", color: "var(--charge)", values: H.system.ccl, dash: "5 4" },
      { name: "discharge limit", color: "var(--discharge)", values: H.system.dcl.map((x) => (isNum(x) ? -x : null)), dash: "5 4" }] },
  cells: { label: "Cell voltage", unit: "V", digits: 3,
    series: (H) => [
      { name: "highest cell", color: "var(--cell-max)", values: H.system.cell_v_max },
      { name: "lowest cell", color: "var(--cell-min)", values: H.system.cell_v_min }] },
  temp: { label: "Temperature", unit: "°C", digits: 1,
    series: (H) => [{ name: "average", color: "var(--warn)", values: H.system.temperature },
      ...Object.entries(H.packs).map(([id, P], k) => ({ name: `${id} max`, color: `hsl(${(k * 67 + 10) % 360} 65% 50%)`, values: P.temp_max, dash: "3 3" }))] },
};

function niceStep(span, n) {
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

function drawHistory() {
  const box = document.getElementById("history-chart");
  if (!history) return;
  const tab = TABS[historyTab];
  const H = history;
  const t = H.t;
  if (!t.length) { box.replaceChildren(h("p", { class: "muted", text: "No history yet." })); return; }
  const series = tab.series(H);
  const W = Math.max(320, box.clientWidth || 800), HGT = W < 560 ? 210 : 260;
  const m = { l: 52, r: 12, t: 10, b: 26 };
  const t1 = H.now, t0 = Math.max(t[0], t1 - 86400, t1 - Math.max(600, t1 - t[0]));
  let ymin = Infinity, ymax = -Infinity;
  for (const sr of series) for (let i = 0; i < t.length; i++) {
    const y = sr.values[i];
    if (isNum(y) && t[i] >= t0) { ymin = Math.min(ymin, y); ymax = Math.max(ymax, y); }
  }
  if (!isFinite(ymin)) { box.replaceChildren(h("p", { class: "muted", text: "No data for this series yet." })); return; }
  if (tab.zero) { ymin = Math.min(ymin, 0); ymax = Math.max(ymax, 0); }
  if (tab.min !== undefined) { ymin = Math.min(ymin, tab.min); ymax = Math.max(ymax, tab.max); }
  if (ymax - ymin < 1e-9) { const d = Math.abs(ymax) * 0.05 || 1; ymin -= d; ymax += d; }
  const step = niceStep(ymax - ymin, 4);
  ymin = Math.floor(ymin / step) * step; ymax = Math.ceil(ymax / step) * step;
  const X = (x) => m.l + ((x - t0) / (t1 - t0)) * (W - m.l - m.r);
  const Y = (y) => m.t + (1 - (y - ymin) / (ymax - ymin)) * (HGT - m.t - m.b);
  const svg = s("svg", { viewBox: `0 0 ${W} ${HGT}`, role: "img", "aria-label": `${tab.label} history` });
  const scale = tab.unit === "W" && Math.max(Math.abs(ymin), Math.abs(ymax)) >= 2000 ? 1000 : 1;
  const unit = scale === 1000 ? "kW" : tab.unit;
  for (let y = ymin; y <= ymax + step / 2; y += step) {
    svg.append(s("line", { class: "grid-line", x1: m.l, x2: W - m.r, y1: Y(y), y2: Y(y) }),
      s("text", { class: "axis-label", x: m.l - 6, y: Y(y) + 4, "text-anchor": "end",
        text: (y / scale).toFixed(Math.max(0, -Math.floor(Math.log10(step / scale) + 1e-9))) }));
  }
  svg.append(s("text", { class: "axis-label", x: 4, y: m.t + 4, text: unit }));
  const span = t1 - t0, tstep = [600, 1800, 3600, 7200, 10800, 21600].find((x) => span / x <= 6) || 21600;
  for (let x = Math.ceil(t0 / tstep) * tstep; x <= t1; x += tstep) {
    svg.append(s("line", { class: "grid-line", x1: X(x), x2: X(x), y1: m.t, y2: HGT - m.b }),
      s("text", { class: "axis-label", x: X(x), y: HGT - 8, "text-anchor": "middle", text: clock(x) }));
  }
  if (tab.zero && ymin < 0 && ymax > 0) svg.append(s("line", { class: "zero", x1: m.l, x2: W - m.r, y1: Y(0), y2: Y(0) }));
  const gap = (H.resolution_s || 10) * 2.5;
  for (const sr of series) {
    let d = "", area = "", run = [];
    const flush = () => {
      if (run.length > 1 && sr.area) {
        const base = Y(Math.max(ymin, Math.min(ymax, 0 >= ymin && 0 <= ymax ? 0 : ymin)));
        area += `M${run[0][0]},${base}` + run.map(([x, y]) => `L${x},${y}`).join("") + `L${run[run.length - 1][0]},${base}Z`;
      }
      run = [];
    };
    for (let i = 0; i < t.length; i++) {
      const y = sr.values[i];
      if (t[i] < t0 || !isNum(y)) { flush(); continue; }
      const px = X(t[i]).toFixed(1), py = Y(y).toFixed(1);
      const broken = !run.length || t[i] - t[i - 1] > gap;
      if (broken) flush();
      d += `${broken ? "M" : "L"}${px},${py}`;
      run.push([px, py]);
    }
    flush();
    if (area) svg.append(s("path", { class: "area", d: area, fill: sr.color }));
    svg.append(s("path", { class: "series", d, stroke: sr.color, "stroke-dasharray": sr.dash || null }));
  }
  const cursor = s("line", { class: "cursor", y1: m.t, y2: HGT - m.b, visibility: "hidden" });
  svg.append(cursor);
  const tip = h("div", { class: "chart-tip", hidden: true });
  svg.addEventListener("pointermove", (ev) => {
    const r = svg.getBoundingClientRect();
    const x = ((ev.clientX - r.left) / r.width) * W;
    const tt = t0 + ((x - m.l) / (W - m.l - m.r)) * (t1 - t0);
    let best = -1;
    for (let i = 0; i < t.length; i++) if (t[i] >= t0 && (best < 0 || Math.abs(t[i] - tt) < Math.abs(t[best] - tt))) best = i;
    if (best < 0) return;
    cursor.setAttribute("x1", X(t[best])); cursor.setAttribute("x2", X(t[best])); cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(h("b", { text: clock(t[best]) }), ...series.map((sr) =>
      h("div", {}, `${sr.name}: ${isNum(sr.values[best]) ? (sr.values[best] / scale).toFixed(tab.digits) : "–"} ${unit}`)));
    tip.hidden = false;
    tip.style.left = `${(X(t[best]) / W) * 100}%`;
    tip.style.top = `${((m.t + 10) / HGT) * 100}%`;
  });
  svg.addEventListener("pointerleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  const legend = h("div", { class: "chart-legend" }, series.map((sr) => {
    const i = h("i"); i.style.background = sr.color;
    return h("span", {}, i, sr.name);
  }));
  box.replaceChildren(svg, tip, legend);
}

function renderTabs() {
  fill("history-tabs", Object.entries(TABS).map(([key, tab]) => {
    const b = h("button", { type: "button", role: "tab", "aria-selected": String(key === historyTab), text: tab.label });
    b.addEventListener("click", () => { historyTab = key; renderTabs(); drawHistory(); });
    return b;
  }));
}

async function loadHistory() {
  try {
    const r = await fetch(`/api/history?points=${HISTORY_POINTS}`, { cache: "no-store" });
    if (r.ok) { history = await r.json(); drawHistory(); }
  } catch (e) { /* next refresh tries again */ }
}

// --- live updates --------------------------------------------------------------------------------------

function setConn(state, text) {
  const c = document.getElementById("conn");
  c.dataset.state = state;
  fill("conn-text", text);
}

function accept(st) {
  lastUpdate = Date.now();
  render(st);
  setConn("live", "live");
}

async function loadState() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    if (r.ok) accept(await r.json());
  } catch (e) { setConn("offline", "gateway unreachable"); }
}

function follow() {
  if (!("EventSource" in window)) { setInterval(loadState, 2000); return; }
  const es = new EventSource("/api/events");
  es.addEventListener("state", (ev) => { try { accept(JSON.parse(ev.data)); } catch (e) { /* ignore a bad event */ } });
  es.addEventListener("error", () => setConn("offline", "reconnecting…"));
}

setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > STALE_AFTER_MS && document.getElementById("conn").dataset.state === "live") {
    setConn("stale", `no update for ${Math.round((Date.now() - lastUpdate) / 1000)} s`);
  }
}, 1000);

let resizeTimer = 0;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawHistory, 150); });

renderTabs();
loadState().then(() => { follow(); loadHistory(); setInterval(loadHistory, HISTORY_REFRESH_MS); });
