// Raftka Console: one page, hash routes, data from /api/ (see client/console/server.py).
// Everything is built with DOM calls and textContent: no HTML from the cluster is trusted.
"use strict";

const REFRESH_MS = 2000;          // how often Overview and a group's page reload
const EVENTS_SHOWN_MAX = 300;     // live events kept on the page
const LAG_POINTS_MAX = 150;       // points of a group's total-lag chart kept on the page
const state = { events: [], live: null, timer: null, source: null, lag: {}, tail: null };

// ------------------------------------------------------------------------ helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const reply = await fetch("/api/" + path, options);
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error((body.error || reply.status) + ": " + (body.message || ""));
  return body;
}

function send(method, path, body) {
  return api(path, { method, headers: { "Content-Type": "application/json" },
                     body: body === undefined ? undefined : JSON.stringify(body) });
}

function toast(text, isError) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = "toast" + (isError ? " error" : "");
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

function table(headers, rows, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map(h => el("th", { class: h.num ? "num" : "" },
                                                      h.label || h)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length,
                                                                    class: "muted" }, "none"))]));
}

function card(label, value, id) {
  return el("div", { class: "card", id }, el("div", { class: "label" }, label),
            el("div", { class: "value" }, value));
}

function ids(list) { return "[" + list.join(",") + "]"; }
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "-"; }
function page() { return document.getElementById("page"); }
function show(...nodes) { page().replaceChildren(...nodes); }
function failed(error) { show(el("h1", {}, "Error"), el("p", { class: "bad" }, error.message)); }

// ------------------------------------------------------------------------ charts
// A line chart in inline SVG: series = [{ name, values: [numbers] }] sharing the x axis
// (one point per sample). The legend shows each series' newest value; the svg carries
// data-max (the largest value drawn) so a test can tell an empty chart from a live one.
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea"];

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function shortNumber(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return String(Math.round(v * 10) / 10);
}

function lineChart(id, title, series, unit) {
  const width = 600, height = 160, pad = 36;
  const max = Math.max(0, ...series.flatMap(s => s.values));
  const top = max > 0 ? max : 1;
  const count = Math.max(2, ...series.map(s => s.values.length));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", id,
                             "data-max": max, role: "img", "aria-label": title });
  chart.append(svg("line", { x1: pad, y1: height - pad / 2, x2: width, y2: height - pad / 2,
                             class: "axis" }));
  const label = svg("text", { x: 2, y: 12, class: "axis-label" });
  label.textContent = shortNumber(top) + " " + unit;
  chart.append(label);
  series.forEach((s, index) => {
    const points = s.values.map((v, i) => {
      const x = pad + (width - pad) * i / (count - 1);
      const y = (height - pad / 2) - (height - pad) * v / top;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    if (points.length) chart.append(svg("polyline", { points: points.join(" "), fill: "none",
      stroke: COLORS[index % COLORS.length], "stroke-width": 2, "data-series": s.name }));
  });
  const legend = el("div", { class: "legend", id: id + "-legend" }, series.map((s, index) =>
    el("span", { "data-series": s.name, style: "color:" + COLORS[index % COLORS.length] },
       s.name + " " + shortNumber(s.values.length ? s.values[s.values.length - 1] : 0))));
  return el("div", { class: "chart-box" }, el("h2", {}, title), chart, legend);
}

async function throughputCharts() {
  const t = await api("throughput");
  if (!t.metrics.length) {
    return el("p", { class: "muted", id: "throughput" }, "No throughput chart: start the " +
              "console with --metrics HOST:PORT,... (the brokers' metrics listeners).");
  }
  const pick = name => t.points.map(p => p[name]);
  return el("div", { class: "charts", id: "throughput" },
    lineChart("chart-records", "Records/s", [{ name: "in", values: pick("records_in") },
                                             { name: "out", values: pick("records_out") }], "/s"),
    lineChart("chart-bytes", "Bytes/s", [{ name: "in", values: pick("bytes_in") },
                                         { name: "out", values: pick("bytes_out") }], "B/s"));
}

// ------------------------------------------------------------------------ pages
async function overview() {
  const [o, charts] = await Promise.all([api("overview"), throughputCharts()]);
  document.getElementById("cluster-badge").textContent =
    "cluster " + o.cluster_id + " · controller " + o.controller;
  const brokers = o.brokers.map(b => el("tr", { "data-broker": b.id },
    el("td", {}, b.id),
    el("td", { class: b.state }, b.state),
    el("td", {}, b.controller ? "controller" : (b.voter ? "voter" : "observer")),
    el("td", {}, b.listeners.map(l => el("div", {}, l.protocol + " " + l.name + " " + l.address))),
    el("td", { class: "num" }, b.partitions_led),
    el("td", { class: "num" }, b.replicas),
    el("td", { class: "num" }, b.pid || "-")));
  const problems = o.under_replicated.map(p => el("tr", {},
      el("td", {}, p.topic + "-" + p.partition), el("td", { class: "warn" }, "under-replicated")))
    .concat(o.offline.map(p => el("tr", {},
      el("td", {}, p.topic + "-" + p.partition), el("td", { class: "bad" }, "offline"))));
  show(
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("Cluster id", o.cluster_id, "cluster-id"),
      card("Controller", o.controller >= 0 ? "broker " + o.controller : "election", "controller"),
      card("Quorum voters", ids(o.quorum.voters)),
      card("Observers", ids(o.quorum.observers)),
      card("Metadata offset", o.quorum.applied_offset),
      card("Brokers alive", o.alive, "alive-count"),
      card("Brokers fenced", o.fenced, "fenced-count"),
      card("Topics / partitions", o.topics + " / " + o.partitions),
      card("Under-replicated", o.under_replicated.length, "under-replicated"),
      card("Offline", o.offline.length, "offline")),
    charts,
    el("h2", {}, "Brokers"),
    table(["Id", "State", "Role", "Listeners", { label: "Leads", num: 1 },
           { label: "Replicas", num: 1 }, { label: "PID", num: 1 }], brokers, "brokers"),
    el("h2", {}, "Partitions needing attention"),
    table(["Partition", "Problem"], problems, "problems"));
  return true;
}

async function topics() {
  const { topics: list } = await api("topics");
  const create = el("form", { class: "inline", id: "create-topic", onsubmit: async event => {
    event.preventDefault();
    const form = event.target;
    try {
      await send("POST", "topics", { name: form.tname.value,
        partitions: Number(form.partitions.value), replication_factor: Number(form.rf.value) });
      toast("created " + form.tname.value);
      route();
    } catch (error) { toast(error.message, true); }
  } },
    el("label", {}, "Name", el("input", { name: "tname", required: true })),
    el("label", {}, "Partitions", el("input", { name: "partitions", type: "number", value: 3,
                                                 min: 1 })),
    el("label", {}, "Replication factor", el("input", { name: "rf", type: "number", value: 0,
                                                         min: 0, title: "0: the broker default" })),
    el("button", { type: "submit" }, "Create topic"));
  const rows = list.map(t => el("tr", { "data-topic": t.name },
    el("td", {}, el("a", { href: "#/topics/" + encodeURIComponent(t.name) }, t.name),
       t.internal ? el("span", { class: "tag" }, "internal") : null),
    el("td", { class: "num" }, t.partitions),
    el("td", { class: "num" }, t.replication_factor),
    el("td", { class: "num " + (t.under_replicated ? "warn" : "") }, t.under_replicated),
    el("td", { class: "num " + (t.offline ? "bad" : "") }, t.offline),
    el("td", {}, t.internal ? "" : el("button", { class: "danger", onclick: async () => {
      if (!confirm("Delete topic " + t.name + "?")) return;
      try { await send("DELETE", "topics/" + encodeURIComponent(t.name)); route(); }
      catch (error) { toast(error.message, true); }
    } }, "Delete"))));
  show(el("h1", {}, "Topics"), create,
       table(["Topic", { label: "Partitions", num: 1 }, { label: "RF", num: 1 },
              { label: "Under-replicated", num: 1 }, { label: "Offline", num: 1 }, ""],
             rows, "topics"));
}

async function topic(name) {
  const t = await api("topics/" + encodeURIComponent(name));
  const rows = t.partitions.map(p => el("tr", { "data-partition": p.partition },
    el("td", {}, el("a", { href: "#/messages/" + encodeURIComponent(name) + "/" + p.partition },
                    p.partition)),
    el("td", { class: p.leader < 0 ? "bad" : "" }, p.leader < 0 ? "none" : p.leader),
    el("td", { class: "num" }, p.leader_epoch),
    el("td", {}, ids(p.replicas)),
    el("td", { class: p.under_replicated ? "warn" : "" }, ids(p.isr)),
    el("td", { class: "num" }, p.log_start_offset ?? "-"),
    el("td", { class: "num" }, p.high_watermark ?? "-"),
    el("td", { class: "num" }, p.records ?? "-")));
  const path = "topics/" + encodeURIComponent(name);
  const act = (what, body, done) => async event => {
    if (event) event.preventDefault();
    try { await send("POST", path + "/" + what, body(event)); toast(done); route(); }
    catch (error) { toast(error.message, true); }
  };
  const configs = t.configs.map(c => el("tr", { "data-config": c.name }, el("td", {}, c.name),
    el("td", {}, c.value), el("td", { class: "muted" }, c.default ? "default" : "set",
    c.default ? null : el("button", { class: "danger", onclick: act("configs",
      () => ({ delete: [c.name] }), "reset " + c.name) }, "Reset"))));
  const grow = el("form", { class: "inline", id: "add-partitions", onsubmit: act("partitions",
    event => ({ count: Number(event.target.count.value) }), "partitions added") },
    el("label", {}, "Partitions", el("input", { name: "count", type: "number",
                                                 min: t.partitions.length + 1,
                                                 value: t.partitions.length + 1 })),
    el("button", { type: "submit" }, "Add partitions"));
  const trim = el("form", { class: "inline", id: "delete-records", onsubmit: event => {
    if (!confirm("Delete the records below this offset?")) { event.preventDefault(); return; }
    return act("delete-records", e => ({ partition: Number(e.target.partition.value),
                                         before: Number(e.target.before.value) }),
               "records deleted")(event);
  } },
    el("label", {}, "Partition", el("input", { name: "partition", type: "number", min: 0,
                                                value: 0 })),
    el("label", {}, "Delete records before offset", el("input", { name: "before",
      type: "number", min: -1, value: -1, title: "-1: everything below the high watermark" })),
    el("button", { type: "submit", class: "danger" }, "Delete records"));
  const edit = el("form", { class: "inline", id: "edit-config", onsubmit: act("configs",
    event => ({ set: { [event.target.cname.value]: event.target.cvalue.value } }),
    "config set") },
    el("label", {}, "Config", el("select", { name: "cname" }, t.configs.map(c =>
      el("option", { value: c.name }, c.name)))),
    el("label", {}, "Value", el("input", { name: "cvalue", required: true })),
    el("button", { type: "submit" }, "Set config"));
  show(el("h1", {}, "Topic " + t.name),
       el("p", { class: "muted" }, "id " + t.topic_id + " · " + t.records + " records"),
       table(["Partition", "Leader", { label: "Epoch", num: 1 }, "Replicas", "ISR",
              { label: "Log start", num: 1 }, { label: "High watermark", num: 1 },
              { label: "Records", num: 1 }], rows, "partitions"),
       t.internal ? null : grow, t.internal ? null : trim,
       el("h2", {}, "Configs"), t.internal ? null : edit,
       table(["Name", "Value", ""], configs, "configs"));
}

function rendered(data, format) {
  if (data.kind === "null") return el("span", { class: "muted" }, "null");
  let text = data.text;
  if (format === "hex" || data.kind === "binary") text = data.hex;
  const note = data.truncated ? el("div", { class: "muted" }, "first bytes of " + data.size) : null;
  return el("div", {}, el("pre", {}, text), note);
}

async function messages(topicName, partitionText) {
  const { topics: list } = await api("topics");
  const chosen = topicName || (list.find(t => !t.internal) || {}).name || "";
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const form = el("form", { class: "inline", id: "browse", onsubmit: event => {
    event.preventDefault();
    const f = event.target;
    const query = new URLSearchParams({ from: f.from.value, value: f.value.value || "0",
                                        limit: f.limit.value, format: f.format.value });
    location.hash = "#/messages/" + encodeURIComponent(f.topic.value) + "/" +
                    f.partition.value + "?" + query;
  } },
    el("label", {}, "Topic", el("select", { name: "topic" }, list.map(t =>
      el("option", { value: t.name, selected: t.name === chosen }, t.name)))),
    el("label", {}, "Partition", el("input", { name: "partition", type: "number", min: 0,
                                                value: partitionText || "0" })),
    el("label", {}, "From", el("select", { name: "from" }, ["earliest", "latest", "offset",
      "timestamp"].map(v => el("option", { value: v, selected: v === (params.get("from") ||
                                                                        "earliest") }, v)))),
    el("label", {}, "Offset / timestamp (ms)", el("input", { name: "value", type: "number",
                                                             value: params.get("value") || "" })),
    el("label", {}, "Limit", el("input", { name: "limit", type: "number", min: 1, max: 500,
                                            value: params.get("limit") || 50 })),
    el("label", {}, "Show values as", el("select", { name: "format" }, ["auto", "hex"].map(v =>
      el("option", { value: v, selected: v === params.get("format") }, v)))),
    el("label", {}, "Filter", el("input", { name: "filter", id: "filter", placeholder: "text",
                                             oninput: event => filterRows(event.target.value) })),
    el("button", { type: "submit" }, "Browse"),
    el("button", { type: "button", id: "tail-toggle", onclick: () => toggleTail(chosen,
      Number(form.partition.value || 0)) }, "Live tail"));
  const produce = el("form", { class: "inline", id: "produce", onsubmit: async event => {
    event.preventDefault();
    const f = event.target;
    const headers = f.headers.value.split("\n").filter(line => line.includes("=")).map(line => {
      const at = line.indexOf("=");
      return { key: line.slice(0, at).trim(), value: line.slice(at + 1) };
    });
    try {
      const done = await send("POST", "topics/" + encodeURIComponent(f.ptopic.value) + "/messages",
        { key: f.key.value === "" ? null : f.key.value, value: f.pvalue.value, headers,
          partition: f.ppartition.value === "" ? null : Number(f.ppartition.value) });
      toast("produced to " + done.topic + "-" + done.partition + " at offset " + done.offset);
      document.getElementById("produced").textContent =
        "last produced: " + done.topic + "-" + done.partition + "@" + done.offset;
    } catch (error) { toast(error.message, true); }
  } },
    el("label", {}, "Produce to topic", el("input", { name: "ptopic", value: chosen })),
    el("label", {}, "Partition (blank: by key)", el("input", { name: "ppartition", type: "number",
                                                               min: 0 })),
    el("label", {}, "Key", el("input", { name: "key" })),
    el("label", {}, "Value", el("textarea", { name: "pvalue" })),
    el("label", {}, "Headers (key=value per line)", el("textarea", { name: "headers" })),
    el("button", { type: "submit" }, "Produce"),
    el("span", { id: "produced", class: "muted" }));
  show(el("h1", {}, "Messages"), form,
       el("div", { id: "tail", hidden: true }, el("h2", {}, "Live tail"),
          el("p", { class: "muted", id: "tail-status" }, ""),
          table([{ label: "Offset", num: 1 }, "Timestamp", "Key", "Value"], [], "tail-records")),
       el("div", { id: "records" },
       topicName ? el("p", { class: "muted" }, "loading...") : el("p", { class: "muted" },
       "pick a topic and partition")), el("h2", {}, "Produce a record"), produce);
  if (!topicName) return;
  const query = new URLSearchParams({ from: params.get("from") || "earliest",
                                      value: params.get("value") || "0",
                                      limit: params.get("limit") || "50" });
  const data = await api("topics/" + encodeURIComponent(topicName) + "/partitions/" +
                         Number(partitionText || 0) + "/messages?" + query);
  const format = params.get("format") || "auto";
  const rows = data.records.map(r => el("tr", { "data-offset": r.offset },
    el("td", { class: "num" }, r.offset),
    el("td", {}, when(r.timestamp_ms)),
    el("td", {}, rendered(r.key, format)),
    el("td", {}, rendered(r.value, format),
       r.value.kind === "json" ? el("span", { class: "tag" }, "json") : null),
    el("td", {}, r.headers.map(h => el("div", {}, h.key + "=",
                                       h.value.kind === "null" ? "null" : h.value.text ?? h.value.hex)))));
  // One page of `limit` records at a time, never the whole partition: older and newer
  // pages are the same request from another offset.
  const limit = Number(query.get("limit"));
  const pageAt = offset => () => {
    const next = new URLSearchParams({ from: "offset", value: String(offset), limit,
                                       format });
    location.hash = "#/messages/" + encodeURIComponent(topicName) + "/" +
                    Number(partitionText || 0) + "?" + next;
  };
  const pager = el("div", { class: "pager", id: "pager" },
    el("button", { type: "button", id: "older", disabled: data.from_offset <= data.log_start_offset,
                   onclick: pageAt(Math.max(data.log_start_offset, data.from_offset - limit)) },
       "Older " + limit),
    el("button", { type: "button", id: "newer", disabled: data.next_offset >= data.high_watermark,
                   onclick: pageAt(data.next_offset) }, "Newer " + limit));
  document.getElementById("records").replaceChildren(
    el("p", { class: "muted", id: "records-range" }, "offsets " + data.log_start_offset + ".." +
       data.high_watermark + " · showing " + data.records.length + " from " + data.from_offset),
    table([{ label: "Offset", num: 1 }, "Timestamp", "Key", "Value", "Headers"], rows,
          "messages"), pager);
}

const TAIL_ROWS_MAX = 200;  // newest records the live tail keeps on the page

function stopTail() {
  if (state.tail) { state.tail.close(); state.tail = null; }
}

// New records of one partition pushed by the console (server-sent events), newest first.
function toggleTail(topicName, partition) {
  const box = document.getElementById("tail");
  const button = document.getElementById("tail-toggle");
  if (state.tail) { stopTail(); button.textContent = "Live tail"; return; }
  if (!topicName) { toast("pick a topic first", true); return; }
  box.hidden = false;
  button.textContent = "Stop tail";
  const body = document.querySelector("#tail-records tbody");
  body.replaceChildren();
  const status = document.getElementById("tail-status");
  const source = new EventSource("/api/topics/" + encodeURIComponent(topicName) +
                                 "/partitions/" + partition + "/tail");
  source.addEventListener("position", e => {
    status.textContent = "waiting for records of " + topicName + "-" + partition +
                         " from offset " + e.data;
    status.dataset.ready = "1";
  });
  source.addEventListener("problem", e => { status.textContent = JSON.parse(e.data); });
  source.onmessage = e => {
    for (const r of JSON.parse(e.data)) {
      body.prepend(el("tr", { "data-offset": r.offset }, el("td", { class: "num" }, r.offset),
        el("td", {}, when(r.timestamp_ms)), el("td", {}, rendered(r.key, "auto")),
        el("td", {}, rendered(r.value, "auto"))));
    }
    while (body.rows.length > TAIL_ROWS_MAX) body.lastChild.remove();
    status.textContent = "live: " + topicName + "-" + partition;
  };
  state.tail = source;
}

function filterRows(text) {
  for (const row of document.querySelectorAll("#messages tbody tr")) {
    row.hidden = text !== "" && !row.textContent.includes(text);
  }
}

async function groups() {
  const data = await api("groups");
  const rows = data.groups.map(g => el("tr", { "data-group": g.group_id },
    el("td", {}, el("a", { href: "#/groups/" + encodeURIComponent(g.group_id) }, g.group_id)),
    el("td", {}, g.state), el("td", { class: "num" }, g.members),
    el("td", { class: "num" }, g.coordinator)));
  show(el("h1", {}, "Consumer groups"),
       data.unreachable_brokers.length ? el("p", { class: "warn" }, "brokers not answering: " +
                                             ids(data.unreachable_brokers)) : null,
       table(["Group", "State", { label: "Members", num: 1 }, { label: "Coordinator", num: 1 }],
             rows, "groups"));
}

async function group(id) {
  const g = await api("groups/" + encodeURIComponent(id));
  const members = g.members.map(m => el("tr", {}, el("td", {}, m.member_id),
    el("td", {}, m.client_id), el("td", { class: "num" }, m.member_epoch),
    el("td", {}, Array.isArray(m.subscribed) ? m.subscribed.join(", ") : m.subscribed),
    el("td", {}, m.assignment.map(a => a.topic + " " + ids(a.partitions)).join("; "))));
  const offsets = g.offsets.map(o => el("tr", { "data-tp": o.topic + "-" + o.partition },
    el("td", {}, o.topic), el("td", { class: "num" }, o.partition),
    el("td", { class: "num" }, o.committed ?? "-"), el("td", { class: "num" }, o.end),
    el("td", { class: "num lag" }, o.lag ?? "-")));
  const topicsOf = [...new Set(g.offsets.map(o => o.topic))];
  const history = state.lag[id] = (state.lag[id] || []).concat([g.total_lag || 0])
    .slice(-LAG_POINTS_MAX);
  const reset = el("form", { class: "inline", onsubmit: async event => {
    event.preventDefault();
    const f = event.target;
    try {
      await send("POST", "groups/" + encodeURIComponent(id) + "/reset-offsets",
                 { topic: f.topic.value, to: f.to.value, offset: Number(f.offset.value || 0) });
      toast("offsets reset"); route();
    } catch (error) { toast(error.message, true); }
  } },
    el("label", {}, "Topic", el("select", { name: "topic" }, topicsOf.map(t =>
      el("option", { value: t }, t)))),
    el("label", {}, "To", el("select", { name: "to" }, ["earliest", "latest", "offset"].map(v =>
      el("option", { value: v }, v)))),
    el("label", {}, "Offset", el("input", { name: "offset", type: "number", min: 0 })),
    el("button", { type: "submit" }, "Reset offsets (empty group only)"),
    el("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirm("Delete group " + id + "?")) return;
      try { await send("DELETE", "groups/" + encodeURIComponent(id)); location.hash = "#/groups"; }
      catch (error) { toast(error.message, true); }
    } }, "Delete group"));
  show(el("h1", {}, "Group " + g.group_id),
       el("div", { class: "cards" }, card("State", g.state, "group-state"),
          card("Protocol", g.protocol), card("Epoch", g.group_epoch),
          card("Coordinator", g.coordinator), card("Total lag", g.total_lag, "total-lag")),
       lineChart("chart-lag", "Total lag over time (sampled every " + REFRESH_MS / 1000 + " s " +
                 "while this page is open)", [{ name: "lag", values: history }], "records"),
       el("h2", {}, "Members"),
       table(["Member", "Client", { label: "Epoch", num: 1 }, "Subscribed", "Assignment"],
             members, "members"),
       el("h2", {}, "Offsets"),
       table(["Topic", { label: "Partition", num: 1 }, { label: "Committed", num: 1 },
              { label: "End", num: 1 }, { label: "Lag", num: 1 }], offsets, "offsets"),
       el("h2", {}, "Reset offsets"), reset);
  return true;
}

// ------------------------------------------------------------------------ live
function connectLive() {
  const source = new EventSource("/api/events");
  source.onmessage = message => {
    const data = JSON.parse(message.data);
    state.live = data.state;
    state.events.push(data.event);
    if (state.events.length > EVENTS_SHOWN_MAX) state.events.shift();
    if (currentPage() === "live") renderLive();
  };
  state.source = source;
}

function renderLive() {
  const s = state.live;
  const brokers = s ? s.brokers.map(b => el("tr", { "data-broker": b.id },
    el("td", {}, b.id), el("td", { class: b.fenced ? "fenced" : "alive" },
                           b.fenced ? "fenced" : "alive"),
    el("td", {}, b.id === s.controller ? "controller" : (b.voter ? "voter" : "observer")),
    el("td", {}, b.address))) : [];
  const leaders = s ? s.topics.flatMap(t => t.partitions.map(p => el("tr", {},
    el("td", {}, t.name + "-" + p.partition),
    el("td", { class: p.leader < 0 ? "bad" : "" }, p.leader < 0 ? "none" : p.leader),
    el("td", { class: "num" }, p.leader_epoch),
    el("td", { class: p.isr.length < p.replicas.length ? "warn" : "" }, ids(p.isr))))) : [];
  const events = state.events.slice().reverse().map(e => el("li", { class: e.kind,
                                                                   "data-seq": e.seq },
    el("span", { class: "ts" }, when(e.ts_ms)), e.text));
  show(el("h1", {}, "Live events"),
       el("p", { class: "muted" }, "The change stream of raftka watch, pushed as it happens: " +
          "controller changes, fencing, leader moves, ISR shrink and expand."),
       el("h2", {}, "Brokers"), table(["Id", "State", "Role", "Address"], brokers, "live-brokers"),
       el("h2", {}, "Changes (newest first)"), el("ul", { class: "events", id: "events" }, events),
       el("h2", {}, "Partitions"),
       table(["Partition", "Leader", { label: "Epoch", num: 1 }, "ISR"], leaders,
             "live-partitions"));
}

// ------------------------------------------------------------------------ routing
function currentPage() {
  return (location.hash.replace(/^#\/?/, "").split(/[/?]/)[0]) || "overview";
}

async function route() {
  clearTimeout(state.timer);
  stopTail();
  const path = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").map(decodeURIComponent);
  const name = path[0] || "overview";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  let again = false;
  try {
    if (name === "overview") again = await overview();
    else if (name === "topics" && path[1]) await topic(path[1]);
    else if (name === "topics") await topics();
    else if (name === "messages") await messages(path[1], path[2]);
    else if (name === "groups" && path[1]) again = await group(path[1]);
    else if (name === "groups") await groups();
    else if (name === "live") renderLive();
    else show(el("h1", {}, "Not found"));
  } catch (error) { failed(error); }
  document.body.dataset.loaded = name;
  if (again) state.timer = setTimeout(() => { if (!document.hidden) refresh(name); }, REFRESH_MS);
}

async function refresh(name) {
  if (currentPage() !== name) return;
  const focused = document.activeElement && document.activeElement.tagName === "INPUT";
  if (!focused) await route();
  else state.timer = setTimeout(() => refresh(name), REFRESH_MS);
}

// A page left for another keeps its server-sent event streams open while the browser may
// still bring it back (back/forward cache), and a browser opens at most 6 connections to one
// host: a few reloads would leave the next page's API calls queued for a minute. So the
// streams close when the page is hidden and the live one reopens if the page comes back.
window.addEventListener("pagehide", () => {
  stopTail();
  if (state.source) { state.source.close(); state.source = null; }
});
window.addEventListener("pageshow", event => { if (event.persisted && !state.source) connectLive(); });
window.addEventListener("hashchange", route);
connectLive();
route();
