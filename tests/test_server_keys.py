"""Read-only API keys: a real `semsearch serve` process (port 0, loopback) with a key file
holding a full key and a read-only one, driven over HTTP; the key file's grammar checked
at startup; every route of the app open or saying whether it writes."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from test_server import error_of  # the OpenAI error object, one line

DEADLINE = 120  # seconds any wait in this module may take
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = {"volcano": ("Volcanoes erupt when magma rises through the crust and escapes as lava and ash.", "geology"),
        "bread": ("To bake bread, knead flour, water, yeast and salt, let the dough rise, then bake it.", "cooking"),
        "tides": ("Ocean tides are caused by the gravitational pull of the moon and the sun.", "science")}
FULL_KEY, READ_KEY = secrets.token_urlsafe(24), secrets.token_urlsafe(24)


def env_for(home) -> dict:
    env = dict(os.environ, SEMSEARCH_HOME=str(home))  # SEMSEARCH_CACHE: conftest's model
    env.pop("SEMSEARCH_API_KEY", None)
    return env


class Keyed:
    def __init__(self, url):
        self.url = url

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=DEADLINE)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, model_folder):
    """A server on a free port (--port 0) whose key file holds a full key (a bare line, as
    before read-only keys) and a read-only one, with comments and blank lines around them."""
    from semsearch.collection import Collection

    home = tmp_path_factory.mktemp("keys-home")
    with Collection.create(home / "docs") as docs:
        docs.add_texts([t for t, _ in DOCS.values()], ids=list(DOCS),
                       metadata=[{"topic": topic} for _, topic in DOCS.values()])
    key_file = home / "keys.txt"
    key_file.write_text(f"# the team's tools\n{FULL_KEY}\n\n  # the search page\n  {READ_KEY}\tread  \n")
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "docs", "--port", "0", "--access-log",
                             "--max-body-bytes", "65536", "--api-key-file", str(key_file)], env=env_for(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # uvicorn's access log: stdout
    watchdog = threading.Timer(DEADLINE, proc.kill)  # readline() must not wait for ever
    watchdog.start()
    log, found = [], None
    try:
        for line in proc.stdout:  # up to the "serving ..." line, once the socket listens
            log.append(line)
            if found := re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", line):
                break
        watchdog.cancel()
        assert found, "".join(log)
        reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)  # the pipe must not fill
        reader.start()
        yield Keyed(f"http://127.0.0.1:{found[1]}")
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
    reader.join(DEADLINE)
    text = "".join(log)
    assert re.search(r'"(GET|POST|DELETE) /', text)  # the access log is on, and holds no key
    assert FULL_KEY not in text and READ_KEY not in text, "an API key reached the server's log"


def ids_in(client: httpx.Client) -> set[str]:
    return {d["id"] for d in client.get("/v1/collections/docs/documents").json()["data"]}


def test_a_read_key_searches_embeds_and_reads(keyed):
    with keyed.client(READ_KEY) as read:
        hits = read.post("/v1/collections/docs/search", json={"query": "the pull of the moon on the ocean", "k": 1})
        assert hits.json()["data"][0]["id"] == "tides"
        similar = read.post("/v1/collections/docs/similar", json={"id": "volcano", "k": 2}).json()["data"]
        assert "volcano" not in {h["id"] for h in similar} and len(similar) == 2
        vectors = read.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}).json()["data"]
        assert [len(v["embedding"]) for v in vectors] == [384, 384]
        assert ids_in(read) == set(DOCS)
        assert read.get("/v1/collections/docs/documents/bread").json()["metadata"] == {"topic": "cooking"}
        assert read.get("/v1/collections/docs").json()["documents"] == len(DOCS)
        assert [c["name"] for c in read.get("/v1/collections").json()["data"]] == ["docs"]
        assert read.get("/v1/models").json()["data"][0]["id"] == MODEL
        assert read.get(f"/v1/models/{MODEL}").status_code == 200
        assert read.get("/readyz").json()["status"] == "ready"
        assert "# TYPE semsearch_" in read.get("/metrics").text  # a scraper may hold a read key
    # the API description says which routes a read-only key is refused
    paths = httpx.get(keyed.url + "/openapi.json").json()["paths"]
    assert "403" in paths["/v1/collections/{name}/documents"]["post"]["responses"]
    assert "403" not in paths["/v1/collections/{name}/search"]["post"]["responses"]


def test_a_read_key_may_not_write_and_nothing_is_written(keyed):
    writes = [("POST", "/v1/collections/docs/documents", {"documents": [{"id": "new", "text": "A new note."}]}),
              ("POST", "/v1/collections/docs/documents", {"documents": [{"id": "bread", "text": "Replaced."}]}),
              ("POST", "/v1/collections/docs/documents/delete", {"ids": ["volcano", "bread"]}),
              ("POST", "/v1/collections/docs/documents/delete", {"where": {"topic": "science"}}),
              ("DELETE", "/v1/collections/docs/documents/tides", None)]
    with keyed.client(READ_KEY) as read, keyed.client(FULL_KEY) as full:
        before = [full.get(f"/v1/collections/docs/documents/{i}").json() for i in sorted(DOCS)]
        for method, path, body in writes:
            error = error_of(read.request(method, path, json=body), 403)
            assert (error["type"], error["code"]) == ("permission_error", "read_only_key"), error
            assert "read-only" in error["message"] and READ_KEY not in error["message"]
        # checked before the body is read, as the key itself is: malformed or oversized, still 403
        for raw in (b'{"documents": ', b"x" * (65 * 1024)):
            error_of(read.post("/v1/collections/docs/documents", content=raw,
                               headers={"Content-Type": "application/json"}), 403)
        # a missing collection or document is not a way to probe: the key is refused first
        error_of(read.delete("/v1/collections/nowhere/documents/x"), 403)
        assert [full.get(f"/v1/collections/docs/documents/{i}").json() for i in sorted(DOCS)] == before
        assert ids_in(full) == set(DOCS) and full.get("/v1/collections/docs").json()["documents"] == len(DOCS)


def test_a_full_key_writes(keyed):
    with keyed.client(FULL_KEY) as full:
        added = full.post("/v1/collections/docs/documents", json={"documents": [{"id": "kite", "text": "Fly a kite."}]})
        assert added.json()["ids"] == ["kite"]
        assert ids_in(full) == set(DOCS) | {"kite"}
        assert full.post("/v1/collections/docs/documents/delete", json={"ids": ["kite"]}).json() == {"deleted": 1}
        full.post("/v1/collections/docs/documents", json={"documents": [{"id": "kite", "text": "Fly a kite."}]})
        assert full.delete("/v1/collections/docs/documents/kite").json() == {"id": "kite", "deleted": True}
        assert ids_in(full) == set(DOCS)


def test_no_key_or_a_wrong_key_is_401_on_read_and_write_routes(keyed):
    routes = [("POST", "/v1/collections/docs/search", {"query": "lava"}),
              ("GET", "/v1/collections/docs/documents", None),
              ("POST", "/v1/collections/docs/documents", {"documents": [{"id": "x", "text": "x"}]}),
              ("DELETE", "/v1/collections/docs/documents/bread", None)]
    wrong = [None, READ_KEY[:-1] + ("A" if READ_KEY[-1] != "A" else "B"), READ_KEY + " read", "w" * 32]
    for key in wrong:
        with keyed.client(key) as client:
            for method, path, body in routes:
                error = error_of(client.request(method, path, json=body), 401)
                assert error["type"] == "authentication_error", (key, path)
    with httpx.Client(base_url=keyed.url, headers={"Authorization": f"Basic {FULL_KEY}"}) as basic:
        error_of(basic.delete("/v1/collections/docs/documents/bread"), 401)
    with keyed.client(FULL_KEY) as full:
        assert ids_in(full) == set(DOCS)


@pytest.mark.parametrize("lines, bad, words", [
    (["# keys", "{full}", "{read} raed"], 3, "expected KEY or KEY read"),
    (["{full}", "", "{read} read now"], 3, "expected KEY or KEY read"),
    (["{full} read", "short read"], 2, "at least 16 characters"),
    (["{full}", "# rotated", "{full} read"], 3, "the same key as the API key file"),
])
def test_a_malformed_key_file_line_is_one_startup_error_naming_the_line_not_the_key(tmp_path, lines, bad, words):
    full, read = "f" * 20 + secrets.token_hex(8), "r" * 20 + secrets.token_hex(8)
    key_file = tmp_path / "keys.txt"
    key_file.write_text("\n".join(lines).format(full=full, read=read) + "\n")
    proc = subprocess.run([sys.executable, "-m", "semsearch", "serve", "--port", "0", "--api-key-file", key_file],
                          env=env_for(tmp_path), capture_output=True, text=True, timeout=DEADLINE)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert f"{key_file}, line {bad}: " in errors[0] and words in errors[0], errors[0]
    assert full not in proc.stderr and read not in proc.stderr and "raed" not in proc.stderr


def test_the_environments_key_is_full_and_may_not_be_listed_read_only(tmp_path, monkeypatch):
    from semsearch.errors import InvalidInput
    from semsearch.server.settings import FULL, READ, read_keys

    key, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{other} read\n")
    monkeypatch.setenv("SEMSEARCH_API_KEY", key)
    assert read_keys(key_file) == ((key.encode(), FULL), (other.encode(), READ))
    key_file.write_text(f"{other}\n{key} read\n")
    with pytest.raises(InvalidInput, match=r"line 2: the same key as SEMSEARCH_API_KEY, with another scope"):
        read_keys(key_file)
    key_file.write_text(f"# none yet\n\n{key} full\n")  # full may be said; the same key twice is one
    assert read_keys(key_file) == ((key.encode(), FULL),)


def flat(routes):
    """Every route, those of included routers too (newer FastAPI keeps an included router
    whole in app.routes, older copies its routes in)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from flat(inner.routes) if inner is not None else [route]


def test_every_route_is_open_or_says_whether_it_writes(embedder, tmp_path):
    """A route added later must be put on read_api or write_api (app.py), or be one of the
    open ones below: a new route in neither fails here."""
    from starlette.routing import Mount

    from semsearch.server.app import create_app
    from semsearch.server.security import KeyedRoute
    from semsearch.server.served import Served

    served = Served(embedder, (), home=tmp_path)
    try:
        app = create_app(embedder, served)
    finally:
        served.close()
    keyed, open_ = {}, set()
    for route in flat(app.routes):
        if isinstance(route, KeyedRoute):
            assert route.writes in (True, False), route.path
            keyed.update({(method, route.path): route.writes for method in route.methods})
        else:
            open_.add(route.path)
            assert not isinstance(route, Mount) or route.path in ("/static", "/docs-assets"), route.path
    assert open_ == {"/healthz", "/", "/static", "/docs-assets", "/docs", "/openapi.json", "/redoc"}
    docs = "/v1/collections/{name}/documents"
    assert {route for route, writes in keyed.items() if writes} == {
        ("POST", docs), ("POST", docs + "/delete"), ("DELETE", docs + "/{doc_id:path}")}
    assert {route for route, writes in keyed.items() if not writes} == {
        ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/models"), ("GET", "/v1/models/{name:path}"),
        ("POST", "/v1/embeddings"), ("GET", "/v1/collections"), ("GET", "/v1/collections/{name}"),
        ("POST", "/v1/collections/{name}/search"), ("POST", "/v1/collections/{name}/similar"),
        ("GET", docs), ("GET", docs + "/{doc_id:path}")}
    with pytest.raises(TypeError, match="ReadRoute or a WriteRoute"):  # no keyed route without a class
        KeyedRoute("/new", lambda: None)
