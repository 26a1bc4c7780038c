// The live page: plain JavaScript, no build step, nothing fetched from outside this box.
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
let token = params.get("token") || localStorage.getItem("lepton-token") || "";

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function getJSON(url) {
  const resp = await fetch(withToken(url), { cache: "no-store" });
  if (resp.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("token needed");
  }
  return resp.json();
}

function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(s)} s`;
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

const cards = new Map();

function renderCameras(cameras) {
  const root = document.getElementById("cameras");
  for (const cam of cameras) {
    let card = cards.get(cam.id);
    if (!card) {
      card = el("article", { class: "camera", "data-camera": cam.id });
      const img = el("img", { alt: `camera ${cam.id}`, src: withToken(cam.mjpeg) });
      const meta = el("div", { class: "meta" });
      meta.append(el("span", { class: "name" }, cam.id), el("span", { class: "figures" }));
      card.append(img, meta);
      root.append(card);
      cards.set(cam.id, card);
    }
    const figures = card.querySelector(".figures");
    const fps = cam.fps == null ? "–" : cam.fps.toFixed(1);
    figures.textContent = `${cam.state} · ${fps} fps · ${cam.objects} objects`;
    figures.className = `figures state-${cam.state}`;
    if (cam.last_error) figures.title = cam.last_error;
  }
}

function renderEvents(events) {
  const list = document.getElementById("events");
  list.replaceChildren(...events.map((e) => {
    const li = el("li", { "data-event": e.event_id });
    if (e.snapshot_url) li.append(el("img", { src: withToken(e.snapshot_url), alt: "snapshot", loading: "lazy" }));
    const text = el("div");
    const zones = (e.zones || []).length ? ` in ${e.zones.join(", ")}` : "";
    text.append(
      el("div", { class: "what" }, `${e.label} #${e.track_id} ${e.type === "end" ? "(ended)" : ""}`),
      el("div", { class: "where" }, `${e.camera}${zones} · score ${(e.top_score ?? e.score ?? 0).toFixed(2)}`),
      el("div", { class: "when" }, new Date(e.ts * 1000).toLocaleTimeString()),
    );
    li.append(text);
    return li;
  }));
}

function renderHealth(body) {
  const h = body.health;
  document.getElementById("h-state").textContent = h ? h.state : (body.ok ? "running" : "wedged");
  document.getElementById("h-fps").textContent = h ? h.fps.toFixed(1) : "–";
  document.getElementById("h-uptime").textContent = h ? fmtUptime(h.uptime_s) : "–";
  document.getElementById("h-subs").textContent = h ? String(h.subscribers) : "–";
}

async function tick() {
  try {
    const [cams, events, health] = await Promise.all([
      getJSON("/api/cameras"), getJSON("/api/events?limit=30"), getJSON("/api/health")]);
    renderCameras(cams.cameras);
    renderEvents(events.events);
    renderHealth(health);
  } catch (err) {
    document.getElementById("h-state").textContent = String(err.message || err);
  }
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  localStorage.setItem("lepton-token", token);
  location.reload();
});

tick();
setInterval(tick, 1000);
