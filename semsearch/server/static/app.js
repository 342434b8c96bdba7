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

function show(hits) {
  const list = $("hits");
  const template = $("hit");
  list.replaceChildren(...hits.map((hit) => {
    const item = template.content.firstElementChild.cloneNode(true);
    item.querySelector(".source").textContent = hit.source || hit.id;
    item.querySelector(".score").textContent = hit.score.toFixed(4);
    item.querySelector(".text").textContent = hit.text;
    const meta = Object.entries(hit.metadata || {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    item.querySelector(".meta").textContent = [`id ${hit.id}`, `chunk ${hit.chunk}`, ...meta].join(" · ");
    return item;
  }));
}

$("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("collection").value;
  say("Searching…");
  try {
    const started = performance.now();
    const result = await api(`/v1/collections/${encodeURIComponent(name)}/search`,
      { query: $("query").value, mode: $("mode").value, k: Number($("k").value) });
    show(result.data);
    say(`${result.data.length} hits in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    show([]);
    say(error.message, true);
  }
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  $("key-form").hidden = true;
  start();
});

function start() {
  loadCollections().catch((error) => say(error.message, true));
}
start();
