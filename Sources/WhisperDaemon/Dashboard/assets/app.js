// whisperd dashboard: plain JavaScript, no library. Text from whisperd goes into the page as
// text (textContent), never as markup.
"use strict";

const state = { session: { logged_in: false }, timers: [], source: null, lastCPU: {} };

function el(tag, attributes, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function change(method, path, body) {
  const response = await fetch(path, {
    method, body, credentials: "same-origin",
    headers: { "X-CSRF-Token": state.session.csrf || "", "Content-Type": "text/plain; charset=utf-8" },
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
  return answer;
}

function bytes(value) {
  if (value === undefined || value === null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let index = 0;
  while (value >= 1024 && index < units.length - 1) { value /= 1024; index++; }
  return `${value.toFixed(index ? 1 : 0)} ${units[index]}`;
}

function duration(seconds) {
  if (seconds === undefined || seconds === null) return "-";
  seconds = Math.floor(seconds);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

// CPU % between two polls of the cumulative counter.
function cpuPercent(character) {
  const seconds = character.resources && character.resources.cpu_seconds;
  if (seconds === undefined) return undefined;
  const now = performance.now() / 1000;
  const before = state.lastCPU[character.name];
  state.lastCPU[character.name] = { seconds, now };
  if (!before || now <= before.now || seconds < before.seconds) return undefined;
  return ((seconds - before.seconds) / (now - before.now)) * 100;
}

function memoryCell(character) {
  const resources = character.resources || {};
  const used = resources.memory_bytes;
  const limit = resources.memory_limit_bytes;
  const cell = el("td", { class: "memory" });
  if (limit && used !== undefined) {
    const fraction = Math.min(1, used / limit);
    const fill = el("span");
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    cell.append(el("span", { class: fraction > 0.85 ? "bar high" : "bar" }, fill));
  }
  cell.append(`${bytes(used)}${limit ? " / " + bytes(limit) : ""}`);
  return cell;
}

function facets(character) {
  return Object.entries(character.facets || {}).map(([name, value]) => {
    const level = String(value).split(":")[0];
    return el("span", { class: `facet ${level}`, title: String(value) }, `${name}:${level}`);
  });
}

function stop() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.source) { state.source.close(); state.source = null; }
}

function every(seconds, work) {
  work();
  state.timers.push(setInterval(work, seconds * 1000));
}

// ---- The fleet -------------------------------------------------------------------------

function renderFleet(main) {
  const body = el("tbody");
  main.replaceChildren(
    el("section", {},
      el("h2", {}, "Fleet"),
      el("table", { id: "fleet" },
        el("thead", {}, el("tr", {},
          ["Name", "State", "Ready", "Facets", "Uptime", "Restarts", "Memory / limit", "CPU"].map((title, index) =>
            el("th", { class: index === 3 ? "hide-narrow" : undefined }, title)))),
        body)));
  every(2, async () => {
    try {
      const [list, health] = await Promise.all([getJSON("/v1/characters"), getJSON("/health").catch(() => ({}))]);
      if (health.supervisor) document.getElementById("summary").textContent = health.supervisor.summary || "";
      body.replaceChildren(...list.characters.map((character) => {
        const cpu = cpuPercent(character);
        return el("tr", { "data-name": character.name },
          el("td", {}, el("a", { href: `#/c/${encodeURIComponent(character.name)}` }, character.name)),
          el("td", { class: `state-${character.state}` }, character.state),
          el("td", {}, character.ready ? "yes" : "no"),
          el("td", { class: "hide-narrow wrap" }, facets(character)),
          el("td", {}, duration(character.uptime_seconds)),
          el("td", {}, character.restarts),
          memoryCell(character),
          el("td", {}, cpu === undefined ? "-" : `${cpu.toFixed(1)}%`));
      }));
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "message error" }, `whisperd: ${error.message}`)));
    }
  });
}

// ---- One character ---------------------------------------------------------------------

function chart(id, title) {
  return el("div", { class: "chart" },
    el("h2", {}, title, el("span", { class: "now", id: `${id}-now` }, "-")),
    el("svg:svg", { id, viewBox: "0 0 600 140", preserveAspectRatio: "none", "data-points": 0 }));
}

// Points of the last hour (x: age; the left edge is the oldest point kept, at least a minute
// and at most an hour ago), scaled to the highest value or the limit.
function drawChart(id, points, value, limit, label) {
  const svg = document.getElementById(id);
  if (!svg) return;
  const values = points.map((point) => [point.age_seconds, value(point)]).filter(([, v]) => v !== undefined && v !== null);
  const top = Math.max(limit || 0, ...values.map(([, v]) => v), 1) * 1.1;
  const span = Math.max(60, Math.min(3600, Math.max(0, ...points.map((point) => point.age_seconds))));
  const x = (age) => 600 - (Math.min(age, span) / span) * 600;
  const y = (v) => 135 - (v / top) * 125;
  const children = [el("svg:text", { x: 4, y: 12 }, label(top / 1.1)), el("svg:text", { x: 4, y: 136 }, `-${duration(span)}`)];
  if (limit) children.push(el("svg:line", { class: "limit", x1: 0, x2: 600, y1: y(limit), y2: y(limit) }));
  children.push(el("svg:polyline", { points: values.map(([age, v]) => `${x(age).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
  svg.replaceChildren(...children);
  svg.setAttribute("data-points", values.length);
  const last = values.length ? values[values.length - 1][1] : undefined;
  if (last !== undefined) svg.setAttribute("data-last", last);
  document.getElementById(`${id}-now`).textContent = last === undefined ? "-" : label(last);
}

function renderCharacter(main, name) {
  const loggedIn = state.session.logged_in;
  const message = el("span", { class: "message", id: "action-result" });
  const action = (command) => el("button", {
    id: `action-${command}`, disabled: !loggedIn,
    onclick: async () => {
      message.className = "message";
      message.textContent = `${command}…`;
      try {
        await change("POST", `/dashboard/api/characters/${encodeURIComponent(name)}/${command}`);
        message.textContent = `${command} requested`;
      } catch (error) {
        message.className = "message error";
        message.textContent = error.message;
      }
    },
  }, command);
  const facts = el("div", { class: "kv", id: "facts" });
  main.replaceChildren(
    el("section", {},
      el("h2", {}, el("a", { href: "#/" }, "Fleet"), " / ", name),
      facts,
      el("p", { class: "actions" }, action("start"), action("stop"), action("restart"), message,
        loggedIn ? null : el("span", { class: "message" }, "read-only: whisperctl dashboard prints the login URL"))),
    el("div", { class: "charts" },
      el("section", {}, chart("chart-memory", "Memory")),
      el("section", {}, chart("chart-cpu", "CPU")),
      el("section", {}, chart("chart-restarts", "Restarts"))),
    ...(loggedIn ? privateSections(name) : [el("section", {}, el("p", { class: "message" },
      "Log in to see the log tail, incidents, environment and character files."))]));

  every(2, async () => {
    try {
      const character = await getJSON(`/v1/characters/${encodeURIComponent(name)}`);
      const resources = character.resources || {};
      const fact = (title, value, id) => el("div", {}, el("span", {}, title), el("b", { id }, value));
      facts.replaceChildren(...[
        fact("State", character.state, "state"), fact("Ready", character.ready ? "yes" : "no", "ready"),
        fact("PID", character.pid || "-", "pid"), fact("Uptime", duration(character.uptime_seconds)),
        fact("Restarts", character.restarts, "restarts"),
        fact("Memory", `${bytes(resources.memory_bytes)}${resources.memory_limit_bytes ? " / " + bytes(resources.memory_limit_bytes) : ""}`),
        fact("Facets", facets(character).length ? facets(character) : "-"),
        character.last_exit ? fact("Last exit", `${character.last_exit.reason} (${duration(character.last_exit.seconds_ago)} ago)`) : null,
      ].filter(Boolean));
    } catch (error) {
      facts.replaceChildren(el("span", { class: "message error" }, `whisperd: ${error.message}`));
    }
  });
  every(5, async () => {
    try {
      const samples = await getJSON(`/dashboard/api/characters/${encodeURIComponent(name)}/samples`);
      drawChart("chart-memory", samples.points, (p) => p.memory_bytes, samples.memory_limit_bytes, bytes);
      drawChart("chart-cpu", samples.points, (p) => p.cpu_percent, undefined, (v) => `${v.toFixed(1)}%`);
      drawChart("chart-restarts", samples.points, (p) => p.restarts, undefined, (v) => `${Math.round(v)}`);
    } catch (error) { /* the next poll tries again */ }
  });
  if (loggedIn) loadPrivate(name);
}

function privateSections(name) {
  return [
    el("section", {}, el("h2", {}, "Log (live)"), el("pre", { id: "logs" })),
    el("section", {}, el("h2", {}, "Incidents"), el("ol", { class: "timeline", id: "incidents" })),
    el("section", {}, el("h2", {}, "Character files"),
      el("p", { class: "actions" },
        el("select", { id: "file-select" }),
        el("button", { id: "file-save", class: "primary" }, "Save and restart"),
        el("span", { class: "message", id: "file-result" })),
      el("textarea", { id: "file-text", spellcheck: "false" })),
    el("section", {}, el("h2", {}, "Environment (secrets redacted)"),
      el("table", { id: "env" }, el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Value"), el("th", {}, "Origin"))), el("tbody"))),
  ];
}

async function loadPrivate(name) {
  const base = `/dashboard/api/characters/${encodeURIComponent(name)}`;
  const logs = document.getElementById("logs");
  state.source = new EventSource(`${base}/logs`);
  state.source.onmessage = (event) => {
    const follow = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.append(event.data + "\n");
    while (logs.childNodes.length > 1000) logs.removeChild(logs.firstChild);
    if (follow) logs.scrollTop = logs.scrollHeight;
  };

  getJSON(`${base}/incidents`).then((answer) => {
    const list = document.getElementById("incidents");
    const incidents = (answer.incidents || []).slice().reverse();
    if (!incidents.length) list.replaceChildren(el("li", {}, "No incidents."));
    else list.replaceChildren(...incidents.map((incident) => el("li", {},
      el("div", {}, el("span", { class: "when" }, incident.at, " "), el("b", {}, incident.reason)),
      el("div", { class: "message" }, `after ${duration(incident.uptime_seconds)} up; restarts ${incident.restarts}`,
        incident.peak_memory_bytes ? `; peak memory ${bytes(incident.peak_memory_bytes)}` : ""),
      (incident.last_log_lines || []).length ? el("pre", {}, incident.last_log_lines.slice(-3).join("\n")) : null)));
  }).catch(() => {});

  getJSON(`${base}/env`).then((answer) => {
    const rows = (answer.environment || []).map((entry) =>
      el("tr", {}, el("td", {}, entry.name), el("td", { class: "wrap" }, entry.value), el("td", {}, entry.origin)));
    document.querySelector("#env tbody").replaceChildren(...rows);
  }).catch(() => {});

  const select = document.getElementById("file-select");
  const text = document.getElementById("file-text");
  const result = document.getElementById("file-result");
  let files = [];
  try {
    files = (await getJSON(`${base}/files`)).files;
  } catch (error) {
    result.textContent = error.message;
    return;
  }
  select.replaceChildren(...files.map((file) => el("option", { value: file.name }, file.name)));
  const show = () => {
    text.value = (files.find((file) => file.name === select.value) || {}).text || "";
    result.className = "message";
    result.textContent = "";
  };
  select.addEventListener("change", show);
  show();
  document.getElementById("file-save").addEventListener("click", async () => {
    result.className = "message";
    result.textContent = "saving…";
    try {
      const answer = await change("PUT", `${base}/files/${encodeURIComponent(select.value)}`, text.value);
      (files.find((file) => file.name === select.value) || {}).text = text.value;
      result.textContent = `saved ${answer.saved}; restarting ${answer.restarted.join(", ") || "nothing"}`;
    } catch (error) {
      result.className = "message error";
      result.textContent = error.message;
    }
  });
}

// ---- Routing ---------------------------------------------------------------------------

async function route() {
  stop();
  try {
    state.session = await getJSON("/dashboard/api/session");
  } catch (error) {
    state.session = { logged_in: false };
  }
  const who = document.getElementById("who");
  who.replaceChildren(state.session.logged_in
    ? el("span", {}, `logged in (${state.session.session}) `, el("button", {
        id: "logout", onclick: async () => { await change("POST", "/logout").catch(() => {}); route(); },
      }, "log out"))
    : "read-only");
  const main = document.getElementById("main");
  const match = location.hash.match(/^#\/c\/(.+)$/);
  if (match) renderCharacter(main, decodeURIComponent(match[1]));
  else renderFleet(main);
}

window.addEventListener("hashchange", route);
route();
