// tspo-edge web page: the archive, search across it, ask one video, play a moment.
// Plain DOM, no build step. Text from the server is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const videos = new Map();   // id -> video row

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function mmss(t) {  // floors, as tspo_edge/timestamps.py does (and video players)
  t = Math.max(0, Math.floor(t));
  const h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = t % 60;
  const p = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${p(m)}:${p(s)}` : `${p(m)}:${p(s)}`;
}

function showError(msg) { $("error").textContent = msg || ""; }

async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) { $("login").style.display = "flex"; }
  if (!resp.ok) throw new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
  return body;
}

function thumbUrl(id, t, size = 160) {
  return `/api/videos/${id}/thumb?t=${Math.max(0, t).toFixed(2)}&size=${size}`;
}

// ---- the player: clicking a moment plays the video from there ----
function play(id, t) {
  const player = $("player");
  const src = `/api/videos/${id}/file`;
  const v = videos.get(id);
  $("now-playing").textContent = v ? `${v.name} @ ${mmss(t)}` : `video ${id} @ ${mmss(t)}`;
  player.dataset.video = String(id);
  player.dataset.seek = String(t);
  const seek = () => {
    player.currentTime = t;
    player.play().catch(() => {});   // autoplay may be refused; the position is set either way
  };
  if (player.getAttribute("src") !== src) {
    player.setAttribute("src", src);
    player.addEventListener("loadedmetadata", seek, { once: true });
    player.load();
  } else if (player.readyState >= 1) {
    seek();
  } else {
    player.addEventListener("loadedmetadata", seek, { once: true });
  }
}

function momentTile(id, t, label, title) {
  return el("div", { class: "moment", title: title || "", dataset: { video: String(id), time: String(t) },
                     onclick: () => play(id, t) },
            [el("img", { src: thumbUrl(id, t), alt: label }), el("span", { class: "ts", text: label }),
             saveClipButton(id, t)]);
}

// ---- save clip: an MP4 of the moment (from CLIP_BEFORE s before it, CLIP_SECONDS long), cut by the server ----
const CLIP_BEFORE = 5, CLIP_SECONDS = 10;

function saveClipButton(id, t) {
  const start = Math.max(0, t - CLIP_BEFORE);
  const b = el("button", { type: "button", class: "save-clip", text: "save clip",
                           title: `save ${CLIP_SECONDS} s from ${mmss(start)} as MP4`,
                           dataset: { clip: `/api/videos/${id}/clip?t=${start.toFixed(2)}&seconds=${CLIP_SECONDS}` },
                           onclick: (ev) => { ev.stopPropagation(); saveClip(b); } });
  // styled here, not with a style attribute: the page's Content-Security-Policy allows no inline styles
  Object.assign(b.style, { display: "block", width: "100%", marginTop: "2px", padding: "0 4px", fontSize: "11px" });
  return b;
}

function attachmentName(resp) {
  const cd = resp.headers.get("Content-Disposition") || "";
  const star = cd.match(/filename\*=(?:UTF-8|utf-8)''([^;]+)/);
  if (star) return decodeURIComponent(star[1]);
  const plain = cd.match(/filename="([^"]+)"/);
  return plain ? plain[1] : null;
}

async function saveClip(button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "…";
  try {
    const resp = await fetch(button.dataset.clip, { credentials: "same-origin" });
    if (!resp.ok) {
      let body = null;
      try { body = await resp.json(); } catch (e) { body = null; }
      if (resp.status === 401) { $("login").style.display = "flex"; }
      throw new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
    }
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a", { href: url, download: attachmentName(resp) || "clip.mp4" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    showError("");
  } catch (e) {
    showError(`save clip: ${e.message}`);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// ---- the archive ----
async function loadArchive() {
  const data = await api("/api/videos");
  const box = $("archive");
  box.replaceChildren();
  const select = $("ask-video");
  select.replaceChildren();
  let n = 0;
  for (const v of data.videos) {
    videos.set(v.id, v);
    if (v.status !== "indexed") continue;
    n++;
    const poster = Math.min(5, (v.duration || 0) / 10);
    box.append(el("div", { class: "card", dataset: { video: String(v.id) }, onclick: () => play(v.id, 0) }, [
      el("img", { src: thumbUrl(v.id, poster, 176), alt: v.name }),
      el("div", { class: "name", text: v.name, title: v.path }),
      el("div", { class: "muted", text: `${mmss(v.duration || 0)} · ${v.frames ?? "?"} frames` }),
    ]));
    select.append(el("option", { value: String(v.id), text: v.name }));
  }
  $("archive-info").textContent = `${n} videos`;
}

// ---- search: moments grouped by video, with the filters beside the search box ----
function searchParams(q) {
  const p = new URLSearchParams({ q, top: "12" });
  const add = (name, id) => { const v = $(id).value.trim(); if (v) p.append(name, v); };
  add("in", "f-in");
  add("since", "f-since");
  add("until", "f-until");
  add("min_score", "f-min");
  return p;
}

function filterText(f) {
  if (!f) return "";
  const parts = f.min_score != null ? [`floor s≥${f.min_score}`] : [];
  for (const d of f.in || []) parts.push(`in ${d}`);
  if (f.since) parts.push(`since ${f.since}`);
  if (f.until) parts.push(`before ${f.until}`);
  return parts.join("; ");
}

async function search(q) {
  const data = await api(`/api/search?${searchParams(q)}`);
  const box = $("results");
  box.replaceChildren();
  const groups = new Map();
  for (const m of data.moments) {
    if (!groups.has(m.video_id)) groups.set(m.video_id, { name: m.name, path: m.path, moments: [] });
    groups.get(m.video_id).moments.push(m);
  }
  for (const [id, g] of groups) {
    const row = el("div", { class: "moments" },
                   g.moments.map((m) => momentTile(id, m.time, m.timestamp, `score ${m.score.toFixed(1)}`)));
    box.append(el("div", { class: "group", dataset: { video: String(id) } },
                  [el("div", { class: "name", text: g.name, title: g.path }), row]));
  }
  if (!data.moments.length) {
    const why = !data.searched ? "no indexed video matches the filters (is anything indexed?)"
                               : `none scores at or above the floor in ${data.searched} videos (lower min score)`;
    box.append(el("div", { class: "muted", text: `no moments: ${why}` }));
  }
  const t = data.timings && data.timings.total_ms;
  $("results-info").textContent = `${data.moments.length} in ${groups.size} of ${data.searched} videos` +
    ` (${filterText(data.filters)}) · ${data.frames} frames searched` +
    (t != null ? ` · ${t.toFixed(1)} ms` : "") + (data.unsearched ? ` · ${data.unsearched} videos not searchable yet` : "");
  $("results-section").hidden = false;
}

// ---- ask ----
async function ask() {
  const id = Number($("ask-video").value);
  const options = $("ask-options").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const body = { video: id, question: $("ask-question").value };
  if (options.length) body.options = options;
  if ($("ask-frames").value) body.frames = Number($("ask-frames").value);
  if ($("ask-no-mllm").checked) body.mllm = "none";
  $("answer").textContent = "…";
  $("answer-note").textContent = "";
  const r = await api("/api/ask", { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify(body) });
  // the answer, and beside it the note that says what gave it (the lite profile is no language model)
  $("answer").textContent = r.answer || "(no answer)";
  $("answer-note").textContent = r.note || "";
  const frames = [...r.frames].sort((a, b) => a.time - b.time);
  $("keyframes").replaceChildren(...frames.map((k) => momentTile(id, k.time, k.timestamp, `score ${k.score.toFixed(1)}`)));
  $("timings").textContent = Object.entries(r.timings).map(([k, v]) => `${k} ${(v * 1000).toFixed(1)} ms`).join(" · ");
}

// ---- a token: from #token=… (never sent in a URL) or the sign-in box -> a session cookie ----
async function signIn(token) {
  // in the body, not a header: a browser cannot send a non-Latin-1 token in a header
  await api("/api/session", { method: "POST", headers: { "Content-Type": "application/json" },
                              body: JSON.stringify({ token }) });
  $("login").style.display = "none";
}

async function start() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    history.replaceState(null, "", location.pathname);
    try { await signIn(decodeURIComponent(m[1])); } catch (e) { showError(e.message); }
  }
  try { await loadArchive(); showError(""); } catch (e) { showError(e.message); }
}

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  search($("q").value).then(() => showError(""), (e) => showError(e.message));
});
$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  ask().then(() => showError(""), (e) => { $("answer").textContent = ""; showError(e.message); });
});
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("token").value).then(start, (e) => showError(e.message));
});
start();
