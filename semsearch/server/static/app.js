// The search page: plain DOM, no build step, no network beyond this server.
// Text from the server is only ever set with textContent (no HTML injection).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "semsearch-api-key";

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(path, body === undefined ? { headers } :
    { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("an API key is needed");
  }
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadCollections() {
  const [models, collections] = await Promise.all([api("/v1/models"), api("/v1/collections")]);
  $("model").textContent = models.data.map((m) => m.id).join(", ");
  const select = $("collection");
  select.replaceChildren(...collections.data.map((c) => {
    const option = document.createElement("option");
    option.value = c.name;
    option.textContent = `${c.name} (${c.documents} documents)`;
    return option;
  }));
  say(collections.data.length ? "" : "This server serves no collection.");
}

const collectionPath = (name) => `/v1/collections/${encodeURIComponent(name)}`;

// The hits of a search or a similar request in collection `name`, each with its two actions.
function show(hits, name) {
  const list = $("hits");
  const template = $("hit");
  list.replaceChildren(...hits.map((hit) => {
    const item = template.content.firstElementChild.cloneNode(true);
    item.querySelector(".source").textContent = hit.source || hit.id;
    item.querySelector(".score").textContent = hit.score.toFixed(4);
    item.querySelector(".text").replaceChildren(...marked(hit.text, hit.highlights || []));
    const meta = Object.entries(hit.metadata || {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    item.querySelector(".meta").textContent = [`id ${hit.id}`, `chunk ${hit.chunk}`, ...meta].join(" · ");
    item.querySelector(".whole").addEventListener("click", () => showDocument(item, name, hit));
    item.querySelector(".like").addEventListener("click", () => go(likeParams(name, hit.id)));
    return item;
  }));
}

// A passage as text nodes with the query's words (a hit's highlights) in <mark>s; the
// spans count code points, as Python's str does, so the text is cut as Array.from's.
function marked(text, spans) {
  const chars = Array.from(text);
  const nodes = [];
  let at = 0;
  for (const [start, end] of spans) {
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(start, end).join("");
    nodes.push(chars.slice(at, start).join(""), mark);
    at = end;
  }
  nodes.push(chars.slice(at).join(""));
  return nodes;  // strings become text nodes: never parsed as HTML
}

// The hit's whole document under it (a second click hides it), its passage marked and
// scrolled to. start and end count code points, as Python's str does, so the text is cut
// as Array.from's code points: JavaScript's own indices count UTF-16 units.
async function showDocument(item, name, hit) {
  if (item.querySelector(".document")) return item.querySelector(".document").remove();
  try {
    const doc = await api(`${collectionPath(name)}/documents/${encodeURIComponent(hit.id)}`);
    if (item.querySelector(".document")) return;  // a second click's answer came first
    const chars = Array.from(doc.text);
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(hit.start, hit.end).join("");
    const panel = document.createElement("div");
    panel.className = "document";
    panel.append(chars.slice(0, hit.start).join(""), mark, chars.slice(hit.end).join(""));  // text nodes
    item.append(panel);
    mark.scrollIntoView({ block: "center" });
    if (mark.textContent !== hit.text) say(`${hit.id} has changed since this search`, true);
  } catch (error) {
    say(error.message, true);
  }
}

// The form's state lives in the address (?collection=…&query=…), so a search can be
// bookmarked, shared and gone back to; the parameter names are the fields' ids.
const FIELDS = ["collection", "query", "mode", "k", "where"];

function readForm() {
  const params = new URLSearchParams();
  for (const id of FIELDS) if ($(id).value) params.set(id, $(id).value);
  if ($("docs").checked) params.set("docs", "1");
  return params;
}

// A field the address leaves out goes back to its default: back or forward to a search
// without a filter must not leave the last one's in the box. The collection stays chosen.
function fillForm(params) {
  for (const id of FIELDS) {
    const field = $(id);
    if (params.has(id)) field.value = params.get(id);
    else if (id !== "collection") field.value = field.tagName === "SELECT" ? field.options[0].value : field.defaultValue;
  }
  $("docs").checked = params.get("docs") === "1";
}

// The documents like `id` are an address too (?collection=…&like=ID), with the form's k,
// filter and one-hit-per-document.
function likeParams(name, id) {
  const params = readForm();
  params.delete("query");
  params.delete("mode");
  params.set("collection", name);
  params.set("like", id);
  return params;
}

// "team=finance; year>=2020" -> ["team=finance", "year>=2020"]: the server reads each as
// `search --where` does (validation.where_conditions) and says what it cannot read.
// A box that holds one JSON object is sent whole: its strings may hold ';'.
const whereList = (text) => text.trim().startsWith("{") ? [text.trim()]
  : text.split(";").map((piece) => piece.trim()).filter(Boolean);

// A search, or with like=ID the documents like that one (POST …/similar).
async function run(params) {
  const like = params.get("like");
  say(like === null ? "Searching…" : "Finding similar documents…");
  try {
    const body = { k: Number(params.get("k") || 10), docs: params.get("docs") === "1" };
    const where = whereList(params.get("where") || "");
    if (where.length) body.where = where;
    if (like === null) Object.assign(body, { query: params.get("query") || "", mode: params.get("mode") || "hybrid" });
    else body.id = like;
    const started = performance.now();
    const name = params.get("collection") || "";
    const result = await api(`${collectionPath(name)}/${like === null ? "search" : "similar"}`, body);
    show(result.data, name);
    const what = like === null ? "hits" : `hits like ${like}`;
    say(`${result.data.length} ${what} in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    show([]);
    say(error.message, true);
  }
}

function go(params) {
  history.pushState(null, "", "?" + params);
  fillForm(params);
  run(params);
}

function runFromAddress() {
  const params = new URLSearchParams(location.search);
  fillForm(params);
  if (params.has("query") || params.has("like")) run(params);
  else show([]);
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  go(readForm());
});

window.addEventListener("popstate", runFromAddress);

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  $("key-form").hidden = true;
  start();
});

function start() {
  loadCollections().then(runFromAddress, (error) => say(error.message, true));
}
start();
