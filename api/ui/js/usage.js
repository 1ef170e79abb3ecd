// The Usage screen (#/usage): the signed-in user's spend over a period (totals, per model, a
// chart of spend per UTC day with the cumulative spend and the limit), where they stand
// against their spend limit, their own instructions and their API tokens.

import { get, put, query } from "./api.js";
import { h, replace, money, toast, fullTime } from "./dom.js";
import { buildForm, dataTable, loadError, tokenManager } from "./admin_forms.js";

const DAY = 86400000;

/** [from, to) in epoch ms for the preset periods, in UTC. */
function presetRange(kind, now = new Date()) {
  const y = now.getUTCFullYear();
  const m = now.getUTCMonth();
  const tomorrow = Date.UTC(y, m, now.getUTCDate() + 1);
  switch (kind) {
    case "last-month": return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1)];
    case "last-30-days": return [tomorrow - 30 * DAY, tomorrow];
    default: return [Date.UTC(y, m, 1), Date.UTC(y, m + 1, 1)];
  }
}

const rfc3339 = (ms) => new Date(ms).toISOString().replace(/\.000Z$/, "Z");
const dayKey = (ms) => new Date(ms).toISOString().slice(0, 10);
const dayStart = (ms) => Math.floor(ms / DAY) * DAY;

function dateLabel(ms, withYear = false) {
  return new Date(ms).toLocaleDateString([], {
    month: "short", day: "numeric", year: withYear ? "numeric" : undefined, timeZone: "UTC",
  });
}

function monthLabel(ms) {
  return new Date(ms).toLocaleDateString([], { month: "short", year: "numeric", timeZone: "UTC" });
}

function count(value) {
  return Number(value || 0).toLocaleString();
}

/** Milliseconds → "850 ms", "12.3 s", "4 min 5 s", "2 h 13 min". */
export function duration(ms) {
  const value = Number(ms || 0);
  if (value < 1000) return `${value} ms`;
  const seconds = value / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** A round number at or above `value` (1, 2, 2.5, 5 × 10^n). */
function niceCeil(value) {
  if (!(value > 0)) return 0;
  const power = 10 ** Math.floor(Math.log10(value));
  const fraction = value / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 2.5 ? 2.5 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

const round = (n) => Math.round(n * 100) / 100;

/**
 * Buckets of spend from `[fromMs, toMs)`: one per UTC day (days without spend are zero), or
 * one per month for ranges longer than 400 days.
 */
function buckets(days, fromMs, toMs) {
  const byDay = new Map((days || []).map((d) => [d.day, d]));
  const start = dayStart(fromMs);
  const total = Math.max(1, Math.ceil((toMs - start) / DAY));
  const monthly = total > 400;
  const result = [];
  const index = new Map();
  for (let t = start; t < toMs; t += DAY) {
    const key = monthly ? dayKey(t).slice(0, 7) : dayKey(t);
    if (!index.has(key)) {
      const bucket = {
        key, at: t, cost: 0, messages: 0, tokens: 0, unpriced: 0,
        label: monthly ? monthLabel(t) : dateLabel(t), long: monthly ? monthLabel(t) : dateLabel(t, true),
      };
      index.set(key, bucket);
      result.push(bucket);
    }
    const day = byDay.get(dayKey(t));
    if (day) {
      const bucket = index.get(key);
      bucket.cost += day.cost_micros || 0;
      bucket.messages += day.messages || 0;
      bucket.tokens += (day.input_tokens || 0) + (day.output_tokens || 0);
      bucket.unpriced += day.unpriced_messages || 0;
    }
  }
  return { items: result, unit: monthly ? "month" : "day" };
}

/** The chart: bars per day (left axis), the cumulative spend (right axis) and the limit. */
function spendChart(usage, fromMs, toMs) {
  const { items, unit } = buckets(usage.days, fromMs, toMs);
  const limitMicros = usage.limit && usage.limit.limit_micros !== null && usage.limit.limit_micros !== undefined
    ? usage.limit.limit_micros : null;

  const W = 760;
  const H = 280;
  const left = 64;
  const right = 72;
  const top = 24;
  const bottom = 40;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const n = items.length;
  const slot = plotW / n;
  const barW = Math.max(1, slot * 0.72);

  let running = 0;
  const cumulative = items.map((bucket) => (running += bucket.cost));
  const total = running;
  const maxBucket = items.reduce((best, bucket) => (bucket.cost > best.cost ? bucket : best), items[0]);
  const barMax = niceCeil(maxBucket.cost) || 10000;
  const cumMax = niceCeil(Math.max(total, limitMicros || 0)) || 10000;
  const yBar = (v) => top + plotH - (v / barMax) * plotH;
  const yCum = (v) => top + plotH - (v / cumMax) * plotH;
  const xCenter = (i) => left + slot * i + slot / 2;

  const svg = (tag, attrs, ...children) => h(`svg:${tag}`, attrs, ...children);
  const nodes = [];

  // grid and axes
  const ticks = 4;
  for (let i = 0; i <= ticks; i += 1) {
    const y = round(top + plotH - (plotH * i) / ticks);
    nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y, y2: y }));
    nodes.push(svg("text", { class: "axis-label", x: left - 6, y: y + 4, "text-anchor": "end" }, money((barMax * i) / ticks)));
    nodes.push(svg("text", { class: "axis-label cumulative-label", x: W - right + 6, y: y + 4, "text-anchor": "start" }, money((cumMax * i) / ticks)));
  }
  nodes.push(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotH }));
  nodes.push(svg("line", { class: "axis", x1: W - right, x2: W - right, y1: top, y2: top + plotH }));
  nodes.push(svg("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
  nodes.push(svg("text", { class: "axis-title", x: left, y: top - 10, "text-anchor": "start" }, `per ${unit}`));
  nodes.push(svg("text", { class: "axis-title cumulative-label", x: W - right, y: top - 10, "text-anchor": "end" }, "cumulative"));

  // bars (a 1-unit stub for zero so every day shows)
  items.forEach((bucket, i) => {
    const y = bucket.cost > 0 ? yBar(bucket.cost) : top + plotH - 1;
    const height = Math.max(1, top + plotH - y);
    const unpriced = bucket.unpriced ? `, ${bucket.unpriced} unpriced` : "";
    nodes.push(svg("rect", {
      class: ["bar", bucket.cost > 0 ? null : "zero"],
      x: round(xCenter(i) - barW / 2), y: round(top + plotH - height), width: round(barW), height: round(height),
      "data-day": bucket.key, "data-cost-micros": bucket.cost,
    }, svg("title", {}, `${bucket.long}: ${money(bucket.cost)} · ${count(bucket.messages)} messages${unpriced} · cumulative ${money(cumulative[i])}`)));
  });

  // x labels: at most ~10
  const every = Math.max(1, Math.ceil(n / 10));
  items.forEach((bucket, i) => {
    if (i % every !== 0) return;
    nodes.push(svg("text", { class: "axis-label", x: round(xCenter(i)), y: top + plotH + 16, "text-anchor": "middle" }, bucket.label));
  });
  nodes.push(svg("text", { class: "axis-title", x: round(left + plotW / 2), y: H - 4, "text-anchor": "middle" }, `UTC ${unit}`));

  // cumulative line
  const points = cumulative.map((value, i) => `${round(xCenter(i))},${round(yCum(value))}`).join(" ");
  nodes.push(svg("polyline", { class: "cumulative", points, fill: "none" },
    svg("title", {}, `Cumulative spend: ${money(total)}`)));

  // limit line
  if (limitMicros !== null) {
    const y = round(yCum(limitMicros));
    nodes.push(svg("line", { class: "limit-line", x1: left, x2: W - right, y1: y, y2: y },
      svg("title", {}, `Your spend limit this ${usage.limit.period || "period"}: ${money(limitMicros)}`)));
    nodes.push(svg("text", { class: "limit-label", x: W - right - 4, y: Math.max(top + 10, y - 5), "text-anchor": "end" }, `limit ${money(limitMicros)}`));
  }

  const span = `${items[0].long} to ${items[n - 1].long}`;
  const summary = `Spend per UTC ${unit} from ${span}: total ${money(total)}` +
    (maxBucket.cost > 0 ? `, highest ${money(maxBucket.cost)} on ${maxBucket.long}` : ", nothing spent") +
    (limitMicros !== null ? `; limit ${money(limitMicros)} per ${usage.limit.period || "period"}` : "") + ".";

  const chart = svg("svg", {
    class: "usage-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": summary,
    preserveAspectRatio: "xMidYMid meet",
  }, svg("title", {}, summary), nodes);

  const table = h("details", { class: "chart-data" },
    h("summary", {}, `Spend per ${unit} as a table`),
    dataTable([
      { label: unit === "day" ? "Day (UTC)" : "Month (UTC)", cell: (b) => b.long },
      { label: "Cost", class: "num", cell: (b) => money(b.cost) },
      { label: "Cumulative", class: "num", cell: (b) => money(cumulative[items.indexOf(b)]) },
      { label: "Messages", class: "num", cell: (b) => count(b.messages) },
      { label: "Tokens", class: "num", cell: (b) => count(b.tokens) },
    ], items, { caption: `Spend per ${unit}` }));

  const legend = h("p", { class: "chart-legend small muted" },
    h("span", { class: "swatch bar-swatch", "aria-hidden": "true" }), `spend per ${unit} (left axis) `,
    h("span", { class: "swatch line-swatch", "aria-hidden": "true" }), "cumulative spend (right axis)",
    limitMicros !== null ? [" ", h("span", { class: "swatch limit-swatch", "aria-hidden": "true" }), "your limit"] : null);

  return h("figure", { class: "chart" }, h("div", { class: "chart-box" }, chart), legend, table);
}

function stat(label, value, note) {
  return h("div", { class: "stat" },
    h("dt", {}, label),
    h("dd", {}, h("span", { class: "stat-value" }, value), note ? h("small", { class: "hint" }, note) : null));
}

function totals(usage) {
  const notes = [];
  if (usage.unpriced_messages) notes.push(`${count(usage.unpriced_messages)} ${usage.unpriced_messages === 1 ? "message" : "messages"} without a price`);
  return h("dl", { class: "usage-totals" },
    stat("Cost", money(usage.cost_micros ?? (usage.messages ? null : 0)), notes.join("; ") || null),
    stat("Messages", count(usage.messages)),
    stat("Input tokens", count(usage.input_tokens)),
    stat("Output tokens", count(usage.output_tokens),
      usage.reasoning_tokens ? `${count(usage.reasoning_tokens)} reasoning` : null),
    stat("Cache tokens", count((usage.cache_read_tokens || 0) + (usage.cache_write_tokens || 0)),
      `${count(usage.cache_read_tokens)} read, ${count(usage.cache_write_tokens)} written`),
    stat("Runtime", duration(usage.runtime_ms)));
}

function limitBlock(limit) {
  const heading = h("h2", {}, "Spend limit");
  if (!limit || limit.limit_micros === null || limit.limit_micros === undefined) {
    return h("section", { class: "card limit-block", "aria-label": "Spend limit" }, heading,
      h("p", { class: "no-limit" }, "No spend limit"),
      limit ? h("p", { class: "muted small" },
        `Spent this ${limit.period}: ${money(limit.spent_micros)}` + (limit.resets_at ? ` (the period resets ${fullTime(limit.resets_at)})` : "")) : null);
  }
  const spent = limit.spent_micros || 0;
  const max = limit.limit_micros;
  const over = spent >= max;
  const percent = max > 0 ? Math.min(100, Math.round((spent / max) * 100)) : 100;
  const remaining = limit.remaining_micros ?? Math.max(0, max - spent);
  return h("section", { class: ["card limit-block", over ? "over" : null], "aria-label": "Spend limit" }, heading,
    h("progress", {
      class: ["limit-progress", over ? "over" : percent >= 80 ? "near" : null],
      max: Math.max(1, max), value: Math.min(spent, Math.max(1, max)),
      "aria-label": `Spent ${money(spent)} of ${money(max)} (${percent}%)`,
    }),
    h("p", { class: "limit-summary" }, `${money(spent)} of ${money(max)} spent this ${limit.period} (${percent}%)`),
    over ? h("p", { class: "error", role: "alert" },
      `You have reached your spend limit: new turns are refused until ${fullTime(limit.resets_at)}.`) : null,
    h("dl", { class: "usage-totals compact" },
      stat("Spent", money(spent)),
      stat("Limit", money(max)),
      stat("Remaining", money(remaining)),
      stat("Resets", fullTime(limit.resets_at), limit.period_start ? `period began ${fullTime(limit.period_start)}` : null)));
}

function byModel(usage) {
  return dataTable([
    { label: "Model", cell: (m) => m.display_name || m.model || "(no model config)" },
    { label: "Messages", class: "num", cell: (m) => count(m.messages) },
    { label: "Input tokens", class: "num", cell: (m) => count(m.input_tokens) },
    { label: "Output tokens", class: "num", cell: (m) => count(m.output_tokens) },
    { label: "Cache read / write", class: "num", cell: (m) => `${count(m.cache_read_tokens)} / ${count(m.cache_write_tokens)}` },
    { label: "Runtime", class: "num", cell: (m) => duration(m.runtime_ms) },
    { label: "Cost", class: "num", cell: (m) => [money(m.cost_micros), m.unpriced_messages ? h("small", { class: "hint" }, ` (${count(m.unpriced_messages)} unpriced)`) : null] },
  ], usage.by_model || [], { caption: "Spend by model", empty: "No messages in this period." });
}

export function mountUsage(main, ctx) {
  let alive = true;
  let ticket = 0;
  let range = presetRange("this-month");

  // period picker
  const preset = h("select", { name: "period", "aria-label": "Period" },
    h("option", { value: "this-month" }, "This month"),
    h("option", { value: "last-month" }, "Last month"),
    h("option", { value: "last-30-days" }, "Last 30 days"),
    h("option", { value: "custom" }, "Custom dates"));
  const fromInput = h("input", { type: "date", name: "from", "aria-label": "From (UTC date)" });
  const toInput = h("input", { type: "date", name: "to", "aria-label": "To (UTC date, included)" });
  const apply = h("button", { type: "submit" }, "Show");
  const customBox = h("span", { class: "row custom-range" },
    h("label", { class: "field inline" }, h("span", { class: "field-label" }, "From"), fromInput),
    h("label", { class: "field inline" }, h("span", { class: "field-label" }, "To"), toInput),
    apply);
  const pickerError = h("p", { class: "error", role: "alert" });
  const presetField = h("label", { class: "field inline" }, h("span", { class: "field-label" }, "Period"), preset);
  // The custom dates are in the form only while "Custom dates" is chosen.
  const picker = h("form", { class: "period-picker row", "aria-label": "Usage period" }, presetField, pickerError);

  preset.addEventListener("change", () => {
    pickerError.textContent = "";
    if (preset.value === "custom") {
      presetField.after(customBox);
      fromInput.value = dayKey(range[0]);
      toInput.value = dayKey(range[1] - 1);
      fromInput.focus();
      return;
    }
    customBox.remove();
    range = presetRange(preset.value);
    load();
  });
  picker.addEventListener("submit", (event) => {
    event.preventDefault();
    pickerError.textContent = "";
    if (preset.value !== "custom") {
      range = presetRange(preset.value);
      load();
      return;
    }
    const from = Date.parse(`${fromInput.value}T00:00:00Z`);
    const to = Date.parse(`${toInput.value}T00:00:00Z`);
    if (Number.isNaN(from) || Number.isNaN(to)) {
      pickerError.textContent = "Pick both a start and an end date.";
      (Number.isNaN(from) ? fromInput : toInput).focus();
      return;
    }
    if (to < from) {
      pickerError.textContent = "The end date is before the start date.";
      toInput.focus();
      return;
    }
    range = [from, to + DAY];
    load();
  });

  const report = h("div", { class: "usage-report", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading usage…"));

  // instructions
  const instructionsSlot = h("div", {}, h("p", { class: "muted" }, "Loading your instructions…"));
  const instructionsForm = (body) => buildForm([
    {
      name: "instructions", label: "Your instructions", type: "textarea", rows: 6, maxlength: 16384,
      hint: "Added to every turn of your chats, after the deployment's system prompt and before the chat's own. Empty for none; at most 16,384 characters.",
    },
  ], body, {
    label: "Your instructions",
    submitLabel: "Save",
    onSubmit: async (values) => {
      const saved = await put("/users/me/instructions", { instructions: values.instructions || "" });
      toast("Instructions saved");
      if (alive) replace(instructionsSlot, instructionsForm(saved || { instructions: values.instructions || "" }));
    },
  });
  get("/users/me/instructions").then((body) => {
    if (alive) replace(instructionsSlot, instructionsForm(body || { instructions: "" }));
  }, (error) => {
    if (alive) replace(instructionsSlot, loadError("your instructions", error));
  });

  const tokens = tokenManager("/users/me/tokens", { heading: "Your API tokens", headingLevel: "h2" });

  const me = (ctx && ctx.me) || {};
  replace(main, h("div", { class: "page usage" },
    h("h1", {}, "Usage", me.username ? h("span", { class: "muted small who-usage" }, ` · ${me.display_name || me.username}`) : null),
    picker,
    report,
    h("section", { class: "card", "aria-labelledby": "instructions-title" },
      h("h2", { id: "instructions-title" }, "Instructions"),
      instructionsSlot),
    h("div", { class: "card" }, tokens)));

  async function load() {
    const mine = ++ticket;
    const [fromMs, toMs] = range;
    report.setAttribute("aria-busy", "true");
    try {
      const usage = await get("/users/me/usage" + query({ from: rfc3339(fromMs), to: rfc3339(toMs) }));
      if (!alive || mine !== ticket) return;
      const from = Date.parse(usage.from) || fromMs;
      const to = Date.parse(usage.to) || toMs;
      const last = Math.max(from, to - 1);
      replace(report,
        h("h2", { class: "period-title" },
          `${dateLabel(from, true)} – ${dateLabel(last, true)} (UTC)`),
        totals(usage),
        limitBlock(usage.limit),
        h("section", { class: "card", "aria-labelledby": "usage-chart-title" },
          h("h2", { id: "usage-chart-title" }, "Spend per day"),
          spendChart(usage, from, to)),
        h("section", { class: "card", "aria-labelledby": "usage-models-title" },
          h("h2", { id: "usage-models-title" }, "By model"),
          byModel(usage)));
    } catch (error) {
      if (!alive || mine !== ticket) return;
      replace(report, loadError("your usage", error));
    } finally {
      if (mine === ticket) report.removeAttribute("aria-busy");
    }
  }

  load();
  return () => {
    alive = false;
    tokens.close();
  };
}
