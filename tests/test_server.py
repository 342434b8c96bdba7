"""`semsearch serve` for real: one server process on a free loopback port for the session,
the real model and collections this module builds, driven over HTTP by httpx, OpenAI's own
client and Debian's chromium (through Playwright)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = {  # id -> (text, topic)
    "volcano": ("Volcanoes erupt when magma rises through the crust and escapes as lava and ash.", "geology"),
    "bread": ("To bake bread, knead flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
              "cooking"),
    "python-exc": ("In Python, a try statement with except and finally clauses handles exceptions and runs "
                   "clean-up code.", "programming"),
    "tides": ("Ocean tides are caused by the gravitational pull of the moon and the sun.", "science"),
    "bicycle": ("Fix a flat bicycle tyre by removing the inner tube, patching the puncture and pumping it up.",
                "repair"),
    "violin": ("The violin is a string instrument played with a bow; it has four strings tuned in fifths.", "music"),
}
LIMITS = {"max_inputs": 64, "max_chars": 2_000, "max_k": 50, "max_body_bytes": 64 * 1024, "max_queue": 128}
DEADLINE = 120  # seconds any wait in this module may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    env = dict(os.environ)  # SEMSEARCH_CACHE: the session's exported model (conftest.py)
    env.pop("SEMSEARCH_API_KEY", None)
    return env


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m semsearch.server ARGS` on a free loopback port, once /healthz answers."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "semsearch.server", *args, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=server_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the server did not answer within {DEADLINE} s:\n{log.read_text()[-3000:]}")


class Server:
    def __init__(self, url, key, home, proc):
        self.url, self.key, self.home, self.proc = url, key, home, proc
        self.auth = {"Authorization": f"Bearer {key}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=60, **kw)

    def metrics(self) -> dict:
        """sample name + sorted labels -> value"""
        text = httpx.get(self.url + "/metrics", headers=self.auth, timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_folder):
    from semsearch.collection import Collection

    home = tmp_path_factory.mktemp("serve-home")
    with Collection.create(home / "docs") as docs:
        docs.add_texts([t for t, _ in DOCS.values()], ids=list(DOCS),
                       metadata=[{"topic": topic} for _, topic in DOCS.values()])
    with Collection.create(home / "scratch", chunk_tokens=16, overlap=0) as scratch:
        scratch.add_texts(["a first note about gardening"], ids=["seed"])
    with Collection.create(home / "doomed") as doomed:  # removed under the server by a test
        doomed.add_texts(["a collection about to be removed"], ids=["gone"])
    key = secrets.token_urlsafe(24)
    key_file = home / "keys.txt"
    key_file.write_text(f"# the test session's key\n{key}\n")
    limits = [arg for name, value in LIMITS.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    log = home / "server.log"
    proc, url = start_server(["docs", "scratch", "doomed", "--home", str(home), "--api-key-file", str(key_file),
                              "--access-log", *limits], log)
    yield Server(url, key, home, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(DEADLINE)
    assert key not in log.read_text(), "the API key reached the server's log"


@pytest.fixture(scope="session")
def http(server):
    with server.client() as client:
        yield client


def error_of(response, status: int) -> dict:
    """The OpenAI error object of a response that must have ``status``; one line, no traceback."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "\n" not in error["message"] and "Traceback" not in response.text
    return error


# -- embeddings ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def openai_client(server):
    openai = pytest.importorskip("openai")  # a dev dependency: present wherever `make test` ran
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0, timeout=60)


TEXTS = ["The quick brown fox jumps over the lazy dog.", "Cosine similarity of unit vectors",
         "semsearch " * 150]  # the last one is cut at the model's max length


def test_openai_client_float_vectors_equal_embed(openai_client, embedder):
    result = openai_client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    got = np.array([d.embedding for d in result.data], np.float32)
    assert [d.index for d in result.data] == [0, 1, 2]
    np.testing.assert_allclose(got, embedder.embed(TEXTS), atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens == int(embedder.tokenize(TEXTS).lengths.sum())
    assert result.model == MODEL


def test_float_vectors_are_written_as_the_float32s_they_are(http):
    """Each number is the shortest text that reads back as the same float32 (as base64
    carries it), not float64's 17 digits: 44 % fewer bytes, written 25x faster."""
    body = {"model": MODEL, "input": TEXTS[:2]}
    floats = http.post("/v1/embeddings", json={**body, "encoding_format": "float"})
    exact = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()["data"]
    numbers = re.findall(r"-?\d+\.\d+(?:[eE][-+]?\d+)?", floats.text.split('"embedding"', 1)[1])
    digits = [len(re.sub(r"[eE].*|[-.]", "", n).lstrip("0")) for n in numbers]  # significant ones
    assert len(numbers) >= 384 and max(digits) <= 9  # a float32 needs 9 at most
    for row, b64 in zip(floats.json()["data"], exact):
        assert np.array_equal(np.array(row["embedding"], np.float32),
                              np.frombuffer(base64.b64decode(b64["embedding"]), "<f4"))


def test_openai_client_base64_vectors_equal_embed(openai_client, embedder):
    # the client asks for base64 when no format is given and decodes it itself
    for kwargs in ({}, {"encoding_format": "base64"}):
        result = openai_client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0], **kwargs)
        got = result.data[0].embedding
        if isinstance(got, str):
            got = np.frombuffer(base64.b64decode(got), "<f4")
        np.testing.assert_allclose(np.asarray(got, np.float32), embedder.embed([TEXTS[0]])[0], atol=1e-6)


def test_input_type_query_adds_the_models_query_prompt(http, embedder):
    body = {"model": MODEL, "input": ["tides"], "input_type": "query"}
    got = np.array(http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"], np.float32)
    np.testing.assert_allclose(got, embedder.embed(["tides"], kind="query")[0], atol=1e-6)


def test_null_optional_fields_take_their_defaults(http, embedder):
    """Some OpenAI-compatible clients (Dify's) send every optional field, null when unset."""
    body = {"model": MODEL, "input": "tides", "encoding_format": None, "dimensions": None, "user": None,
            "input_type": None}
    r = http.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], embedder.embed(["tides"])[0], atol=1e-6)


def test_models_lists_the_served_model(http, embedder):
    data = http.get("/v1/models").json()["data"]
    assert [(m["id"], m["dimensions"]) for m in data] == [(MODEL, embedder.dim)]


def test_openai_client_retrieves_the_served_model(openai_client):
    import openai

    assert openai_client.models.retrieve(MODEL).id == MODEL
    assert openai_client.models.retrieve("all-MiniLM-L6-v2").id == MODEL
    with pytest.raises(openai.NotFoundError, match="not served here"):
        openai_client.models.retrieve("text-embedding-3-small")


def test_concurrent_requests_each_get_their_own_rows(server, embedder):
    texts = [f"request {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(i % 23 + 1)) for i in range(96)]
    expected = embedder.embed(texts)
    before = server.metrics()

    async def one(client, i):
        # every third request sends its text twice, so rows from one request are also checked
        inputs = [texts[i]] * (2 if i % 3 == 0 else 1)
        r = await client.post("/v1/embeddings", json={"model": MODEL, "input": inputs})
        assert r.status_code == 200, r.text
        return i, r.json()["data"]

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60, limits=limits) as c:
            return await asyncio.wait_for(asyncio.gather(*(one(c, i) for i in range(len(texts)))), DEADLINE)

    for i, data in asyncio.run(main()):
        for row in data:
            np.testing.assert_allclose(np.array(row["embedding"], np.float32), expected[i], atol=1e-6)
    after = server.metrics()
    runs = after[("semsearch_batch_texts_count", ())] - before[("semsearch_batch_texts_count", ())]
    texts_run = after[("semsearch_batch_texts_sum", ())] - before[("semsearch_batch_texts_sum", ())]
    assert texts_run == len(texts) + len(texts[::3])
    assert runs < len(texts), "concurrent requests were not merged into shared model runs"


def test_full_queue_answers_503_with_retry_after(server, embedder):
    long_texts = [f"{i} " + "a long sentence about nothing in particular, " * 10 for i in range(64)]

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=DEADLINE,
                                     limits=httpx.Limits(max_connections=16)) as c:
            body = {"model": MODEL, "input": long_texts, "encoding_format": "base64"}
            return await asyncio.gather(*(c.post("/v1/embeddings", json=body) for _ in range(12)))

    responses = asyncio.run(main())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert error_of(r, 503)["type"] == "overloaded_error"
        else:
            got = np.frombuffer(base64.b64decode(r.json()["data"][5]["embedding"]), "<f4")
            np.testing.assert_allclose(got, embedder.embed([long_texts[5]])[0], atol=1e-6)


# -- auth ------------------------------------------------------------------------------------
def test_health_is_open_everything_else_needs_the_key(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.head(server.url + "/healthz").status_code == 200  # load balancers' probes may send HEAD
    # open too, holding no data: the page's static files and the API description
    assert "<title>semsearch</title>" in httpx.get(server.url + "/").text
    api = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/embeddings" in api["paths"]
    # it says which routes need the key, so /docs offers to send it (its "Try it out" got 401s)
    assert api["components"]["securitySchemes"]["API key"]["scheme"] == "bearer"
    assert api["paths"]["/v1/embeddings"]["post"]["security"] == [{"API key": []}]
    body = {"model": MODEL, "input": "x"}
    for headers in ({}, {"Authorization": "Bearer " + "w" * 32}, {"Authorization": f"Basic {server.key}"},
                    {"Authorization": server.key}):
        for method, path in (("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/models"),
                             ("GET", "/v1/collections"), ("POST", "/v1/embeddings")):
            r = httpx.request(method, server.url + path, headers=headers, json=body if method == "POST" else None)
            error = error_of(r, 401)
            assert error["type"] == "authentication_error" and server.key not in r.text
    # the key is checked before the body is read: malformed or oversized, it is still a 401
    for raw in (b'{"model": ', b"x" * (65 * 1024)):
        r = httpx.post(server.url + "/v1/embeddings", content=raw, headers={"Content-Type": "application/json"})
        error_of(r, 401)
    r = httpx.get(server.url + "/readyz", headers=server.auth)
    assert r.status_code == 200 and r.json()["collections"] == ["docs", "scratch", "doomed"]


# -- limits and malformed requests --------------------------------------------------------------
@pytest.mark.parametrize("body, status, param_or_words", [
    ({"model": MODEL, "input": ["x"] * 65}, 413, "at most 64"),
    ({"model": MODEL, "input": "y" * 2001}, 413, "limit is 2,000"),
    ({"model": MODEL, "input": []}, 400, "empty"),
    ({"model": MODEL, "input": ["ok", ""]}, 400, "input[1]"),
    ({"model": MODEL, "input": [1, 2, 3]}, 400, "input: token-id arrays are not supported"),
    ({"model": MODEL, "input": [[101, 7592, 102]]}, 400, "input: token-id arrays are not supported"),
    ({"model": MODEL, "input": ["ok", None]}, 400, "input"),
    ({"model": MODEL, "input": "x", "temperature": 0.2}, 400, "unknown field"),
    ({"input": "x"}, 400, "model"),
    ({"model": MODEL, "input": "x", "dimensions": 256}, 400, "dimensions must be 384"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "text-embedding-3-small", "input": "x"}, 404, "not served here"),
])
def test_embeddings_refuses_bad_requests_with_one_line(http, body, status, param_or_words):
    error = error_of(http.post("/v1/embeddings", json=body), status)
    assert param_or_words in error["message"]


def test_malformed_json_is_400_saying_why(http):
    for raw, why in ((b'{"model": "m", "input": ', "Expecting value at character 24"), (b"\xff\xfe", "Expecting"),
                     (b'{"model": "m", "input": "caf\xe9"}', "not UTF-8 (byte 0xe9 at 28)"),  # Latin-1, not UTF-8
                     (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
                     (b'{"model": "m', "Unterminated string starting at character 10"),  # Python's ends in "at"
                     (b'{"model": "a\tb"}', "Invalid control character at character 12")):
        r = http.post("/v1/embeddings", content=raw, headers={"Content-Type": "application/json"})
        error = error_of(r, 400)
        assert error["code"] == "json_invalid" and why in error["message"] and " at at " not in error["message"], error


def test_a_client_that_leaves_mid_body_is_counted_as_gone_not_as_a_bad_request(server):
    """It was a 400 invalid_request_error: the metrics blamed a request nobody finished sending."""
    def counts():
        m = server.metrics()
        return ({labels[2][1]: v for (name, labels), v in m.items() if name == "semsearch_http_request_duration_seconds_count"
                 and labels[:2] == (("method", "POST"), ("route", "/v1/embeddings"))},
                m.get(("semsearch_errors_total", (("type", "invalid_request_error"),)), 0))

    before = counts()
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{\"model\": " % server.key.encode())
    deadline = time.monotonic() + DEADLINE
    while sum((after := counts())[0].values()) == sum(before[0].values()):  # until the server has seen it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grew = {status for status, n in after[0].items() if n > before[0].get(status, 0)}
    assert grew == {"499"} and after[1] == before[1], (grew, after[1] - before[1])


def test_body_over_the_limit_is_413_declared_or_streamed(http):
    big = b'{"model": "%s", "input": "%s"}' % (MODEL.encode(), b"z" * (70 * 1024))
    error = error_of(http.post("/v1/embeddings", content=big, headers={"Content-Type": "application/json"}), 413)
    assert "64" in error["message"] or "65,536" in error["message"]

    def chunks():  # no Content-Length: the server counts as it reads
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]
    r = http.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    error_of(r, 413)


def test_unknown_routes_and_methods_use_the_error_shape(http):
    assert error_of(http.get("/v2/nothing"), 404)["type"] == "not_found_error"
    error_of(http.get("/v1/embeddings"), 405)


SURROGATE = "\\ud800"  # JSON may escape one; no tokenizer or database takes it


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/embeddings", '{"model": "%s", "input": "a%sb"}' % (MODEL, SURROGATE), "input"),
    ("/v1/embeddings", '{"model": "%s", "input": ["ok", "%s"]}' % (MODEL, SURROGATE), "input"),
    ("/v1/collections/docs/search", '{"query": "a%s"}' % SURROGATE, "query"),
    ("/v1/collections/docs/search", '{"query": "a%s", "mode": "lexical"}' % SURROGATE, "query"),
    ("/v1/collections/docs/search", '{"query": "a", "where": {"topic": "%s"}}' % SURROGATE, "where"),
    ("/v1/collections/docs/search", '{"query": "a", "where": ["topic=%s"]}' % SURROGATE, "where"),
    ("/v1/collections/docs/similar", '{"id": "volcano", "where": {"topic": {"$in": ["%s"]}}}' % SURROGATE, "where"),
    ("/v1/collections/scratch/documents", '{"documents": [{"text": "a%s"}]}' % SURROGATE, "documents.0.text"),
    ("/v1/collections/scratch/documents", '{"documents": [{"text": "a", "id": "%s"}]}' % SURROGATE,
     "documents.0.id"),
    ("/v1/collections/scratch/documents", '{"documents": [{"text": "a", "metadata": {"%s": 1}}]}' % SURROGATE,
     "documents.0.metadata"),
])
def test_lone_surrogates_are_refused_with_400(http, path, raw, param):
    r = http.post(path, content=raw.encode(), headers={"Content-Type": "application/json"})
    error = error_of(r, 400)
    assert error["param"] == param and "surrogate" in error["message"]


def test_an_error_answer_leaves_the_connection_serving(server, http):
    """A refused request (a filter too wide: once a 500 from SQLite, a 413 since it is
    checked first) answers in the error shape, and its keep-alive connection takes the
    next request (uvicorn closed it under the client when Starlette re-raised after a 500)."""
    where = {f"key{i}": i for i in range(2000)}
    wide = {"documents": [{"id": "wide", "text": "x", "metadata": where}]}
    assert http.post("/v1/collections/scratch/documents", json=wide).status_code == 200
    conn = HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=60)
    try:
        headers = {**server.auth, "Content-Type": "application/json"}
        conn.request("POST", "/v1/collections/scratch/search", body=json.dumps({"query": "x", "where": where}),
                     headers=headers)
        first = conn.getresponse()
        body = first.read().decode()
        assert first.status >= 400 and "Traceback" not in body and "\n" not in json.loads(body)["error"]["message"]
        conn.request("GET", "/v1/models", headers=server.auth)  # the same socket: http.client reuses it
        assert conn.getresponse().status == 200
    finally:
        conn.close()
        http.delete("/v1/collections/scratch/documents/wide")


def test_an_unexpected_exception_is_a_500_in_the_error_shape_and_is_not_raised_on():
    """No request reaches a non-semsearch exception through the real routes any more (every
    input is checked first), so the middleware gets a route of its own that fails. Raising
    on after answering is what made uvicorn drop a keep-alive connection."""
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from semsearch.server.errors import Unexpected

    def broken(request):
        raise ZeroDivisionError("a bug")

    app = Starlette(routes=[Route("/broken", broken)], middleware=[Middleware(Unexpected)])  # as app.py adds it

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/broken")

    response = asyncio.run(call())  # ASGITransport raises what the app raises
    assert response.status_code == 500
    assert response.json()["error"] == {"message": "internal server error (the server log has the details)",
                                        "type": "server_error", "param": None, "code": None}


# -- collections ---------------------------------------------------------------------------------
def test_a_collection_removed_under_the_server_leaves_the_others_listed(server, http):
    """`semsearch rm` of one served collection made GET /v1/collections a 500 (and the
    search page useless). Runs before any other test reads that collection."""
    from semsearch.collection import delete_collection

    delete_collection(server.home / "doomed")
    r = http.get("/v1/collections")
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["data"]][:2] == ["docs", "scratch"]
    error_of(http.post("/v1/collections/doomed/search", json={"query": "x"}), 404)


def test_collections_list_and_info(http):
    data = http.get("/v1/collections").json()["data"]
    assert [(c["name"], c["documents"]) for c in data][0] == ("docs", len(DOCS))
    info = http.get("/v1/collections/docs").json()
    assert info["documents"] == len(DOCS) and info["model"]["name"] == MODEL
    assert error_of(http.get("/v1/collections/nope"), 404)["type"] == "not_found_error"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_search_finds_the_document_that_answers(http, mode):
    query = "exceptions in python: clean-up with finally" if mode == "lexical" else \
        "how do I handle errors and clean up afterwards in python"
    r = http.post("/v1/collections/docs/search", json={"query": query, "k": 3, "mode": mode})
    hits = r.json()["data"]
    assert hits[0]["id"] == "python-exc" and hits[0]["text"] == DOCS["python-exc"][0]
    assert {"id", "score", "source", "chunk", "text", "metadata"} <= set(hits[0])
    assert hits[0]["metadata"] == {"topic": "programming"}


def test_search_several_queries_with_a_filter_and_docs(http):
    body = {"queries": ["what makes lava come out of a mountain", "the moon pulls the sea"], "k": 2,
            "where": {"topic": "science"}, "docs": True}
    results = http.post("/v1/collections/docs/search", json=body).json()["results"]
    assert [[h["id"] for h in r["data"]] for r in results] == [["tides"], ["tides"]]


def test_search_hits_carry_the_querys_words_as_highlights(http):
    """search --json's field: [start, end) code points of the words lexical search reads
    (stemmed), in every mode and for each of several queries; similar has no query: none."""
    text = DOCS["bicycle"][0]
    for mode in ("hybrid", "dense", "lexical"):
        hit = http.post("/v1/collections/docs/search", json={"query": "fixing punctured tyres", "k": 1,
                                                              "mode": mode}).json()["data"][0]
        assert hit["id"] == "bicycle" and [text[a:b] for a, b in hit["highlights"]] == ["Fix", "tyre", "puncture"], mode
    body = {"queries": ["fixing punctured tyres", "lava"], "k": 6, "mode": "dense"}
    results = http.post("/v1/collections/docs/search", json=body).json()["results"]
    marked = [{h["id"]: h["highlights"] for h in r["data"] if h["highlights"]} for r in results]
    at = {word: text.index(word) for word in ("Fix", "tyre", "puncture")}
    lava = DOCS["volcano"][0].index("lava")
    assert marked == [{"bicycle": [[at[w], at[w] + len(w)] for w in ("Fix", "tyre", "puncture")]},
                      {"volcano": [[lava, lava + 4]]}]
    assert all(h["highlights"] == [] for h in http.post(SIMILAR, json={"id": "volcano"}).json()["data"])


@pytest.mark.parametrize("body, status, words", [
    ({"query": "x", "k": 51}, 413, "k must be at most 50"),
    ({"query": "x", "k": 0}, 400, "k must be at least 1"),
    ({"query": "x", "k": "5"}, 400, "k"),
    ({"query": "x", "mode": "fuzzy"}, 400, "mode"),
    ({"query": "   "}, 400, "empty"),
    ({"k": 3}, 400, "either query"),
    ({"query": "x", "queries": ["y"]}, 400, "either query"),
    ({"queries": ["q"] * 65}, 413, "at most 64"),
    ({"query": "x", "where": {"topic": {"$in": "a"}}}, 400, "where['topic']['$in'] must be a list of values"),
    ({"query": "x", "limit": 3}, 400, "unknown field"),
    ({"query": "x" * 2_001}, 413, "the limit is 2,000"),
])
def test_search_refuses_bad_requests(http, body, status, words):
    assert words in error_of(http.post("/v1/collections/docs/search", json=body), status)["message"]


def test_add_search_delete_through_http(http):
    docs = [{"id": "note-1", "text": "The staff meeting moved to Thursday at ten.", "metadata": {"team": "ops"}},
            {"text": "Quarterly budget review for the finance team.", "metadata": {"team": "finance"}}]
    ids = http.post("/v1/collections/scratch/documents", json={"documents": docs}).json()["ids"]
    assert ids[0] == "note-1" and len(ids) == 2 and ids[1]
    hits = http.post("/v1/collections/scratch/search", json={"query": "when is the meeting", "k": 1}).json()["data"]
    assert hits[0]["id"] == "note-1" and hits[0]["metadata"] == {"team": "ops"}
    assert http.delete("/v1/collections/scratch/documents/note-1").json() == {"id": "note-1", "deleted": True}
    hits = http.post("/v1/collections/scratch/search", json={"query": "when is the meeting", "k": 5}).json()["data"]
    assert "note-1" not in [h["id"] for h in hits]
    gone = error_of(http.delete("/v1/collections/scratch/documents/note-1"), 404)  # as GET words it
    assert gone == error_of(http.get("/v1/collections/scratch/documents/note-1"), 404)
    assert (gone["type"], gone["code"]) == ("not_found_error", "no_such_document") and "'note-1'" in gone["message"]
    for doc_id, path in (("a/b c", "a%2Fb%20c"), ("notes/2024/q1.txt", "notes/2024/q1.txt")):
        http.post("/v1/collections/scratch/documents", json={"documents": [{"id": doc_id, "text": "a path id"}]})
        assert http.delete(f"/v1/collections/scratch/documents/{path}").json() == {"id": doc_id, "deleted": True}
    error_of(http.post("/v1/collections/scratch/documents", json={"documents": [{"text": " "}]}), 400)
    error_of(http.post("/v1/collections/scratch/documents", json={"documents": [{"text": "a", "tags": []}]}), 400)
    error_of(http.post("/v1/collections/scratch/documents", json={"documents": [{"text": "a"}] * 65}), 413)


def test_delete_by_filter_through_http_deletes_exactly_the_matching_documents(server, http):
    docs = [{"id": "dw-1", "text": "Pack the tent and the sleeping bags for the camping trip.",
             "metadata": {"trip": "camp", "n": 1}},
            {"id": "dw-2", "text": "Book the train tickets for the camping weekend.",
             "metadata": {"trip": "camp", "n": 2.0, "paid": True}},
            {"id": "dw-3", "text": "Camping stoves need a gas canister.", "metadata": {"trip": "city", "paid": True}}]
    before = http.get("/v1/collections/scratch").json()["documents"]
    http.post("/v1/collections/scratch/documents", json={"documents": docs}).raise_for_status()
    route = "/v1/collections/scratch/documents/delete"
    assert http.post(route, json={"where": {"trip": "camp", "n": "1"}}).json() == {"deleted": 1}  # dw-1
    assert http.post(route, json={"where": {"paid": True, "trip": "camp"}}).json() == {"deleted": 1}  # dw-2
    assert http.post(route, json={"where": {"trip": "camp"}}).json() == {"deleted": 0}
    for mode in ("dense", "lexical", "hybrid"):
        hits = http.post("/v1/collections/scratch/search", json={"query": "camping trip", "k": 10, "mode": mode})
        assert {h["id"] for h in hits.json()["data"]} & {"dw-1", "dw-2", "dw-3"} == {"dw-3"}, mode
    assert http.post(route, json={"ids": ["dw-3", "nope"]}).json() == {"deleted": 1}
    info = http.get("/v1/collections/scratch").json()
    assert info["documents"] == before and info["index"]["vectors"] == info["chunks"]
    error_of(httpx.post(server.url + route, json={"where": {"trip": "camp"}}), 401)


@pytest.mark.parametrize("body, status, words", [
    ({"where": {}}, 400, "where is empty"),
    ({}, 400, "ids or where"),
    ({"where": None}, 400, "ids or where"),
    ({"ids": ["seed"], "where": {"id": "seed"}}, 400, "ids or where"),
    ({"where": {"colour": "red"}}, 400, "colour"),
    ({"where": {"topic": ["a"]}}, 400, "where"),
    ({"where": "topic=a"}, 400, "where"),
    ({"ids": ["x"] * 65}, 413, "at most 64"),
    ({"wher": {"id": "seed"}}, 400, "unknown field"),
])
def test_delete_by_filter_refuses_bad_requests_and_deletes_nothing(http, body, status, words):
    before = http.get("/v1/collections/scratch").json()["documents"]
    error = error_of(http.post("/v1/collections/scratch/documents/delete", json=body), status)
    assert words in error["message"], error
    assert http.get("/v1/collections/scratch").json()["documents"] == before
    error_of(http.post("/v1/collections/nope/documents/delete", json={"where": {"id": "seed"}}), 404)


# -- where's operators and its list form ---------------------------------------------------------
WHERE_DOCS = {  # id -> metadata: numbers to range over, a list matched by any item, a key some lack
    "w-2019": {"year": 2019, "team": "a", "tags": ["x", "y"]},
    "w-2020": {"year": 2020, "team": "b", "tags": ["y"]},
    "w-2022": {"year": 2022, "team": "c"},
    "w-2024": {"year": 2024, "team": "a", "tags": ["x"]},
}


@pytest.fixture
def where_docs(http):
    """WHERE_DOCS in scratch for one test (the other documents there have no year)."""
    docs = [{"id": i, "text": f"A note the {m['team']} team wrote in {m['year']}.", "metadata": m}
            for i, m in WHERE_DOCS.items()]
    http.post("/v1/collections/scratch/documents", json={"documents": docs}).raise_for_status()
    try:
        yield
    finally:
        http.post("/v1/collections/scratch/documents/delete", json={"ids": list(WHERE_DOCS)}).raise_for_status()


def searched(http, where) -> set[str]:
    """The ids a dense search with ``where`` finds, k past them all: exactly what the filter lets through."""
    body = {"query": "a note a team wrote", "k": 50, "mode": "dense", "docs": True, "where": where}
    r = http.post("/v1/collections/scratch/search", json=body)
    assert r.status_code == 200, r.text
    return {h["id"] for h in r.json()["data"]}


@pytest.mark.parametrize("where, found", [
    ({"year": {"$gte": 2020, "$lt": 2024}}, {"w-2020", "w-2022"}),
    ({"team": {"$in": ["a", "b"]}}, {"w-2019", "w-2020", "w-2024"}),
    ({"team": {"$nin": ["a", "b"]}, "year": {"$exists": True}}, {"w-2022"}),
    ({"tags": "x"}, {"w-2019", "w-2024"}),  # a list value matches by any of its items
    ({"tags": {"$in": ["y"]}, "year": {"$gt": 2019}}, {"w-2020"}),
    ({"year": {"$exists": True}, "tags": {"$exists": False}}, {"w-2022"}),
    (["year>=2020", "team!=c"], {"w-2020", "w-2024"}),  # the list form: --where's strings
    (["year>2019", "year<=2022"], {"w-2020", "w-2022"}),
    (['{"team": {"$in": ["a", "c"]}}', "tags=x"], {"w-2019", "w-2024"}),
    (["tags=y"], {"w-2019", "w-2020"}),
])
def test_search_where_takes_operators_and_the_command_lines_strings(http, where_docs, where, found):
    assert searched(http, where) == found


def test_similar_takes_the_where_list_form(http, where_docs):
    for where in (["year>2019"], {"year": {"$gt": 2019}}):
        body = {"id": "w-2019", "k": 50, "where": where}
        hits = http.post("/v1/collections/scratch/similar", json=body).json()["data"]
        assert {h["id"] for h in hits} == {"w-2020", "w-2022", "w-2024"}, where


def test_delete_by_a_range_or_the_list_form_deletes_exactly_those(http, where_docs):
    route = "/v1/collections/scratch/documents/delete"
    assert http.post(route, json={"where": {"year": {"$lt": 2020.5}}}).json() == {"deleted": 2}
    assert searched(http, {"year": {"$exists": True}}) == {"w-2022", "w-2024"}
    assert http.post(route, json={"where": ["year>=2024", "team=a"]}).json() == {"deleted": 1}
    assert searched(http, {"year": {"$exists": True}}) == {"w-2022"}


def test_document_pages_take_where_operators_in_the_address(http, where_docs):
    from urllib.parse import quote

    def ids(query: str) -> list[str]:
        r = http.get(f"/v1/collections/scratch/documents?{query}")
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["data"]]

    assert ids("where=" + quote("year>=2020", safe="")) == ["w-2020", "w-2022", "w-2024"]
    assert ids("where=year%3E2019&where=year%3C2024") == ["w-2020", "w-2022"]
    assert ids("where=" + quote('{"team": {"$in": ["a"]}}', safe="")) == ["w-2019", "w-2024"]
    assert ids("where=tags%3Dx&where=" + quote("team!=a", safe="")) == []


def test_the_api_description_shows_both_forms_of_where(server):
    schemas = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    for name in ("SearchRequest", "SimilarRequest", "DeleteRequest"):
        where = schemas[name]["properties"]["where"]
        assert '"$gte": 2020' in where["description"] and '"year>=2020"' in where["description"], name
        assert {"object", "array"} <= {form.get("type") for form in where["anyOf"]}, name


BAD_WHERE = [  # where, status, the library's (or the body's) one line
    ({"year": {"$near": 2020}}, 400, "where['year'] has an unknown operator '$near'"),
    ({"year": {}}, 400, "where['year'] is an empty dict"),
    ({"year": {"$gte": True}}, 400, "where['year']['$gte'] must be a string or a number to compare with, not true"),
    ({"year": {"$lt": None}}, 400, "not null"),
    ({"team": {"$in": "a"}}, 400, "where['team']['$in'] must be a list of values, not str"),
    ({"team": {"$in": list(range(1_001))}}, 413, "where['team']['$in'] has 1,001 values; the limit is 1,000"),
    ({"team": {"$eq": {"$eq": "a"}}}, 400, "where['team']['$eq'] must be a string, number or boolean"),
    ({"colour": {"$gte": 1}}, 400, "unknown metadata key 'colour'"),
    (["noequals"], 400, "where expects KEY=VALUE (or !=, <, <=, >, >=; or a JSON object), got 'noequals'"),
    (["year>=2020", "year>=2021"], 400, "where gives 'year' $gte twice"),
    (['{"year": {"$gte": null}}'], 400, "not null"),
    (["{nope"], 400, "is not a valid JSON object"),
    (['{"team": {"$in": [%s]}}' % ",".join(["1"] * 1_001)], 413, "has 1,001 values; the limit is 1,000"),
    (["colour=red"], 400, "unknown metadata key 'colour'"),
    ([f"key{i}>=1" for i in range(101)], 413, "where has 101 conditions; the limit is 100"),
    (["team=a", 7], 400, "where: must be an object of conditions"),
    ("team=a", 400, "where: must be an object of conditions"),
]


@pytest.mark.parametrize("route", ["search", "similar", "documents/delete"])
@pytest.mark.parametrize("where, status, words", BAD_WHERE)
def test_a_malformed_where_is_refused_with_the_librarys_one_line(http, route, where, status, words):
    before = http.get("/v1/collections/scratch").json()["documents"]
    body = {"where": where} | ({"query": "a note"} if route == "search" else {"id": "seed"} if route == "similar"
                               else {})
    error = error_of(http.post(f"/v1/collections/scratch/{route}", json=body), status)
    assert error["type"] == "invalid_request_error" and words in error["message"], error
    assert http.get("/v1/collections/scratch").json()["documents"] == before


def test_search_during_writes_sees_whole_documents(server):
    """A writer replaces one multi-chunk document again and again (version a, version b) while
    readers search for it: every answer holds all chunks of exactly one version."""
    sentence = "zebraquartz marker sentence number {} of version {} here. "
    versions = {v: "".join(sentence.format(i, v) for i in range(8)) for v in ("alpha", "beta")}
    stop = threading.Event()
    seen, failures = [], []

    def write():
        with server.client() as c:
            for n in range(12):
                v = "alpha" if n % 2 else "beta"
                r = c.post("/v1/collections/scratch/documents", json={"documents": [{"id": "flip", "text": versions[v]}]})
                if r.status_code != 200:
                    failures.append(r.text)
        stop.set()

    def read():
        with server.client() as c:
            deadline = time.monotonic() + DEADLINE
            while not stop.is_set() and time.monotonic() < deadline:
                r = c.post("/v1/collections/scratch/search", json={"query": "zebraquartz", "k": 50, "mode": "dense"})
                hits = [h for h in r.json()["data"] if h["id"] == "flip"]
                seen.append(tuple(sorted((h["chunk"], "alpha" in h["text"]) for h in hits)))

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert not failures
    chunks = {len(s) for s in seen if s}
    assert len(chunks) == 1 and next(iter(chunks)) > 1, "the document changed its chunk count mid-write"
    for answer in seen:
        assert len({alpha for _, alpha in answer}) <= 1, f"a search saw two versions at once: {answer}"
    assert sum(1 for s in seen if s) > 3, "the readers saw nothing"


def test_writes_waiting_for_the_writer_lock_leave_searches_their_threads(server, embedder):
    """Another process (`semsearch add`) holds scratch's writer lock while more writes arrive
    than the threadpool has threads (40): searches on docs must still be answered. They
    waited for the writes, up to a minute, and /metrics with them."""
    from semsearch.collection import Collection

    async def main(holder):
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=DEADLINE,
                                     limits=httpx.Limits(max_connections=64)) as c:
            with holder.writer():
                writes = [asyncio.ensure_future(c.post("/v1/collections/scratch/documents", json={
                    "documents": [{"id": f"queued-{i}", "text": f"queued write {i}"}]})) for i in range(48)]
                await asyncio.sleep(1)  # only so that, unfixed, the writes hold every thread first
                r = await c.post("/v1/collections/docs/search", json={"query": "tides", "k": 1, "mode": "lexical"})
                assert r.status_code == 200 and not any(w.done() for w in writes), "the search waited for the writes"
                assert (await c.get("/metrics")).status_code == 200 and not any(w.done() for w in writes)
            assert {w.status_code for w in await asyncio.gather(*writes)} == {200}
            for i in range(48):
                await c.delete(f"/v1/collections/scratch/documents/queued-{i}")

    with Collection.open(server.home / "scratch", embedder=embedder) as holder:
        asyncio.run(asyncio.wait_for(main(holder), DEADLINE))


# -- reading documents back ------------------------------------------------------------------------
DOCUMENTS = "/v1/collections/docs/documents"


def test_get_document_returns_its_text_metadata_and_chunks(http):
    doc = http.get(f"{DOCUMENTS}/volcano").json()
    assert doc == {"object": "document", "id": "volcano", "text": DOCS["volcano"][0], "source": None,
                   "metadata": {"topic": "geology"}, "chunks": 1, "added_at": doc["added_at"]}
    assert isinstance(doc["added_at"], float) and doc["added_at"] > 1.6e9


def test_get_document_with_a_slash_in_its_id_sent_plain_or_as_2f(http):
    """scratch cuts 16-token chunks: the text comes back whole, joined from several."""
    doc_id = "h3-read/notes 2024/q1.txt"
    text = ("The quarterly report covers revenue, hiring and the new office. Revenue grew by a tenth, "
            "hiring slowed in the spring, and the move to the new office is planned for the autumn.")
    before = http.get("/v1/collections/scratch").json()["chunks"]
    added = http.post("/v1/collections/scratch/documents",
                      json={"documents": [{"id": doc_id, "text": text, "metadata": {"quarter": 1}}]})
    assert added.json()["ids"] == [doc_id]
    try:
        again = http.post("/v1/collections/scratch/documents",  # sent again as it is: not embedded
                          json={"documents": [{"id": doc_id, "text": text, "metadata": {"quarter": 1}}]}).json()
        assert (added.json()["added"], again["ids"], again["unchanged"], again["metadata_updated"]) == (1, [doc_id], 1, 0)
        chunks = http.get("/v1/collections/scratch").json()["chunks"] - before
        assert chunks > 1
        for path in ("h3-read/notes%202024/q1.txt", "h3-read%2Fnotes%202024%2Fq1.txt"):
            doc = http.get(f"/v1/collections/scratch/documents/{path}").json()
            assert (doc["id"], doc["text"], doc["metadata"], doc["chunks"]) == (doc_id, text, {"quarter": 1}, chunks)
    finally:
        http.delete("/v1/collections/scratch/documents/h3-read%2Fnotes%202024%2Fq1.txt")
    error_of(http.get("/v1/collections/scratch/documents/h3-read/notes%202024/q1.txt"), 404)


def test_a_missing_document_or_collection_is_404(http):
    error = error_of(http.get(f"{DOCUMENTS}/no-such-doc"), 404)
    assert error["type"] == "not_found_error" and "no-such-doc" in error["message"]
    for path in ("/v1/collections/nope/documents/volcano", "/v1/collections/nope/documents"):
        assert "nope" in error_of(http.get(path), 404)["message"]


def test_document_pages_join_up_to_every_id_in_order(http):
    ids, after = [], None
    while True:
        page = http.get(DOCUMENTS, params={"limit": 4} | ({"after": after} if after else {})).json()
        assert page["object"] == "list" and 0 < len(page["data"]) <= 4
        assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
        ids += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert ids == sorted(DOCS)
    whole = http.get(DOCUMENTS).json()  # 100 by default: all six
    assert [d["id"] for d in whole["data"]] == ids and not whole["has_more"]
    assert [d["text"] for d in whole["data"]] == [DOCS[i][0] for i in ids]
    assert not http.get(DOCUMENTS, params={"limit": len(DOCS)}).json()["has_more"]  # exactly all: no more
    assert http.get(DOCUMENTS, params={"limit": len(DOCS) - 1}).json()["has_more"]
    empty = http.get(DOCUMENTS, params={"after": ids[-1]}).json()
    assert (empty["data"], empty["first_id"], empty["last_id"], empty["has_more"]) == ([], None, None, False)


def test_document_pages_filter_by_where_and_leave_text_out_on_request(http):
    def ids(**params):
        return [d["id"] for d in http.get(DOCUMENTS, params=params).json()["data"]]

    assert ids(where="topic=geology") == ["volcano"]
    assert ids(where=["topic=geology", "id=bread"]) == []  # every pair must match
    assert ids(where="id=tides") == ["tides"]
    bare = http.get(DOCUMENTS, params={"text": "false", "limit": 2}).json()["data"]
    assert [(d["id"], d["text"], d["metadata"]) for d in bare] == [(i, None, {"topic": DOCS[i][1]})
                                                                  for i in sorted(DOCS)[:2]]


@pytest.mark.parametrize("query, words", [
    ("limit=0", "limit must be at least 1"),
    ("limit=-3", "limit must be at least 1"),
    ("limit=abc", "limit: "),
    ("limit=2.5", "limit: "),
    ("text=maybe", "text: "),
    ("where=noequals", "where expects KEY=VALUE (or !=, <, <=, >, >=; or a JSON object), got 'noequals'"),
    ("where==geology", "where expects KEY=VALUE"),
    ("where=colour=red", "unknown metadata key 'colour'"),
    ("after=", "after must be 1 to"),
    ("limt=3", "limt: unknown field"),  # a misspelt option is refused, not ignored
])
def test_document_pages_refuse_bad_parameters_with_one_line(http, query, words):
    error = error_of(http.get(f"{DOCUMENTS}?{query}"), 400)
    assert error["type"] == "invalid_request_error" and words in error["message"], error


def test_a_page_limit_past_max_page_is_413_as_k_past_max_k_is(http):
    error = error_of(http.get(f"{DOCUMENTS}?limit=1001"), 413)
    assert error["type"] == "invalid_request_error" and "limit must be at most 1,000, got 1,001" in error["message"]


def test_document_reads_need_the_key_and_are_described_in_the_api(server):
    for path in (DOCUMENTS, f"{DOCUMENTS}/volcano"):
        assert error_of(httpx.get(server.url + path), 401)["type"] == "authentication_error"
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in ("/v1/collections/{name}/documents", "/v1/collections/{name}/documents/{doc_id}"):
        assert paths[path]["get"]["security"] == [{"API key": []}] and paths[path]["get"]["description"]
    assert {p["name"] for p in paths["/v1/collections/{name}/documents"]["get"]["parameters"]} == {
        "name", "limit", "after", "where", "text"}


def test_document_reads_are_counted_by_route_template_not_by_id(server, http):
    before = server.metrics()
    for doc_id in ("volcano", "bread", "no-such-doc"):
        http.get(f"{DOCUMENTS}/{doc_id}")
    http.get(DOCUMENTS, params={"limit": 1})
    after = server.metrics()

    def grew(route, status):
        key = ("semsearch_http_request_duration_seconds_count",
               (("method", "GET"), ("route", route), ("status", status)))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("/v1/collections/{name}/documents/{doc_id:path}", "200") == 2
    assert grew("/v1/collections/{name}/documents/{doc_id:path}", "404") == 1
    assert grew("/v1/collections/{name}/documents", "200") == 1
    assert not [labels for _, labels in after if any("volcano" in value for _, value in labels)]


# -- documents like a stored one ----------------------------------------------------------------------
SIMILAR = "/v1/collections/docs/similar"


def test_similar_ranks_the_other_documents_by_a_stored_ones_vectors(http):
    """Of the six, the volcano's nearest is the tides (the natural world); it is not its own hit."""
    hits = http.post(SIMILAR, json={"id": "volcano"}).json()["data"]
    assert hits[0]["id"] == "tides" and hits[0]["text"] == DOCS["tides"][0]
    assert sorted(h["id"] for h in hits) == sorted(set(DOCS) - {"volcano"})
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    searched = http.post("/v1/collections/docs/search", json={"query": "tides", "k": 1}).json()["data"][0]
    assert set(hits[0]) == set(searched) and hits[0]["metadata"] == {"topic": "science"}
    assert http.post(SIMILAR, json={"id": "tides"}).json()["data"][0]["id"] == "volcano"


def test_similar_takes_k_and_where(http):
    assert [h["id"] for h in http.post(SIMILAR, json={"id": "volcano", "k": 2}).json()["data"]] == ["tides", "bicycle"]
    body = {"id": "volcano", "where": {"topic": "cooking"}, "docs": True, "k": 50}
    assert [h["id"] for h in http.post(SIMILAR, json=body).json()["data"]] == ["bread"]
    assert http.post(SIMILAR, json={"id": "volcano", "where": {"topic": "geology"}}).json()["data"] == []


def test_similar_with_docs_false_answers_each_chunk(http):
    """scratch cuts 16-token chunks: a long document is several hits, one per chunk, unless docs."""
    text = ("Tomatoes need full sun, deep watering twice a week and a stake to climb. Pinch out the side "
            "shoots, feed them once the first fruit sets, and pick them as soon as they turn red.")
    http.post("/v1/collections/scratch/documents", json={"documents": [{"id": "h4-similar", "text": text}]})
    try:
        chunks = http.get("/v1/collections/scratch/documents/h4-similar").json()["chunks"]
        assert chunks > 1
        body = {"id": "seed", "where": {"id": "h4-similar"}, "k": 50}
        per_chunk = http.post("/v1/collections/scratch/similar", json={**body, "docs": False}).json()["data"]
        assert sorted(h["chunk"] for h in per_chunk) == list(range(chunks))
        assert all(h["id"] == "h4-similar" and text[h["start"]:h["end"]] == h["text"] for h in per_chunk)
        assert [h["id"] for h in http.post("/v1/collections/scratch/similar", json=body).json()["data"]] == [
            "h4-similar"]
    finally:
        http.delete("/v1/collections/scratch/documents/h4-similar")


def test_similar_to_a_missing_document_or_in_a_missing_collection_is_404(http):
    error = error_of(http.post(SIMILAR, json={"id": "no-such-doc"}), 404)
    assert error["type"] == "not_found_error" and "no-such-doc" in error["message"]
    assert "nope" in error_of(http.post("/v1/collections/nope/similar", json={"id": "volcano"}), 404)["message"]


@pytest.mark.parametrize("body, status, words", [
    ({"id": "volcano", "k": 51}, 413, "k must be at most 50"),
    ({"id": "volcano", "k": 0}, 400, "k must be at least 1"),
    ({"id": "volcano", "k": "5"}, 400, "k: "),
    ({"k": 3}, 400, "id: Field required"),
    ({"id": 7}, 400, "id: "),
    ({"id": ""}, 400, "id must be 1 to"),
    ({"id": "volcano", "docs": "yes"}, 400, "docs: "),
    ({"id": "volcano", "where": {"topic": {"$in": "a"}}}, 400, "where['topic']['$in'] must be a list of values"),
    ({"id": "volcano", "where": {"colour": "red"}}, 400, "unknown metadata key 'colour'"),
    ({"id": "volcano", "query": "lava"}, 400, "query: unknown field"),
])
def test_similar_refuses_bad_requests_with_one_line(http, body, status, words):
    assert words in error_of(http.post(SIMILAR, json=body), status)["message"]


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_count_requests_errors_texts_and_tokens(server, http):
    before = server.metrics()
    http.post("/v1/embeddings", json={"model": MODEL, "input": ["one", "two words"]})
    http.post("/v1/embeddings", json={"model": MODEL, "input": "x", "nonsense": 1})
    after = server.metrics()

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("semsearch_http_request_duration_seconds_count", method="POST", route="/v1/embeddings",
                status="200") == 1
    assert grew("semsearch_http_request_duration_seconds_count", method="POST", route="/v1/embeddings",
                status="400") == 1
    assert grew("semsearch_errors_total", type="invalid_request_error") == 1
    assert grew("semsearch_embedded_texts_total") == 2
    assert grew("semsearch_embedded_tokens_total") == 3 + 4  # [CLS] one [SEP], [CLS] two words [SEP]
    assert ("semsearch_queue_texts", ()) in after


@pytest.mark.parametrize("mode, embedded", [("hybrid", 2), ("dense", 2), ("lexical", 0)])
def test_search_queries_are_embedded_by_the_batcher(server, http, mode, embedded):
    before = server.metrics()
    body = {"queries": ["volcanoes and lava", "tides and the moon"], "k": 1, "mode": mode}
    assert len(http.post("/v1/collections/docs/search", json=body).json()["results"]) == 2
    after = server.metrics()
    assert after[("semsearch_embedded_texts_total", ())] - before[("semsearch_embedded_texts_total", ())] == embedded


# -- the search page, in a real browser --------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="class")
def browser():
    """One Debian chromium for TestPagesInChromium (each test gets a context of its own: no
    cookie, storage or cache of another test's). `make test` installs chromium; these tests
    are never skipped for want of it."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: `apt-get install -y chromium` (make test does)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(browser, server, path: str):
    """A page of chromium, in a fresh context, at ``path``; on leaving, checks that
    everything it loaded came from the server (no CDN: the page and the docs must work
    offline)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        requests = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(server.url + path)
        yield page
        assert all(url.startswith(server.url) for url in requests), f"{path} reached beyond the server"
    finally:
        context.close()


def page_hit_ids(page) -> list[str]:
    return [m.inner_text().split("id ")[1].split(" ")[0] for m in page.query_selector_all("#hits .meta")]


class TestPagesInChromium:
    """The search page and the API docs in one chromium (the class's `browser`: it is
    closed after the last of them, as Playwright's event loop must be before the tests
    below call asyncio.run)."""

    def test_search_page_finds_a_document_in_chromium(self, browser, server):
        with chromium_page(browser, server, "/") as page:
            page.fill("#key", server.key)  # the server has a key: the page asks for it
            page.click("#key-form button")
            page.wait_for_selector("#collection option[value=docs]", state="attached")
            page.select_option("#collection", "docs")
            page.fill("#query", "making a loaf at home with yeast and an oven")
            page.select_option("#mode", "dense")
            page.click("#search button")
            first = page.wait_for_selector("#hits li.hit")
            assert first.query_selector(".text").inner_text() == DOCS["bread"][0]
            assert "id bread" in first.query_selector(".meta").inner_text()
            assert float(first.query_selector(".score").inner_text()) > 0


    def test_search_page_keeps_its_search_in_the_address(self, browser, server):
        """A search is a URL (bookmarked, shared, gone back to), with its filter and one hit per document."""
        from urllib.parse import urlencode

        wanted = {"collection": "docs", "query": "something to eat", "mode": "dense", "k": "5",
                  "where": "topic=cooking", "docs": "1"}
        hit_ids = lambda page: [li.inner_text().split("id ")[1].split(" ")[0] for li in page.query_selector_all("#hits .meta")]
        with chromium_page(browser, server, "/?" + urlencode(wanted)) as page:
            page.fill("#key", server.key)
            page.click("#key-form button")
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length > 0")
            assert hit_ids(page) == ["bread"]  # the filter, from the address, left one document of six
            assert page.input_value("#query") == "something to eat" and page.is_checked("#docs")

            page.fill("#query", "string instrument")
            page.fill("#where", "")
            page.click("#search button")
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id violin')")
            assert "query=string+instrument" in page.url and "where" not in page.url

            page.go_back()  # the first search again, filter and all
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id bread')")
            assert hit_ids(page) == ["bread"] and page.input_value("#where") == "topic=cooking"
            page.go_forward()  # the second search: its address has no filter, so the box has none
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id violin')")
            assert page.input_value("#where") == "" and page.input_value("#query") == "string instrument"

            page.fill("#where", "topic")  # no condition: the server's one line, on the page
            page.click("#search button")
            page.wait_for_selector("#status.error")
            assert page.inner_text("#status") == ("where expects KEY=VALUE (or !=, <, <=, >, >=; or a JSON object), "
                                                  "got 'topic'") and not page.query_selector_all("#hits li")


    def test_search_page_filters_by_a_range_and_the_similar_view_keeps_it(self, browser, server, http, where_docs):
        """The box's conditions go to the server as --where's strings: a range narrows the hits."""
        from urllib.parse import urlencode

        address = {"collection": "scratch", "query": "a note a team wrote", "mode": "dense", "k": "20", "docs": "1"}
        with chromium_page(browser, server, "/?" + urlencode(address)) as page:
            page.fill("#key", server.key)
            page.click("#key-form button")
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length > 0")
            assert set(WHERE_DOCS) <= set(page_hit_ids(page))

            page.fill("#where", " year>=2020 ; ; year<2024 ")
            page.click("#search button")
            page.wait_for_function("location.search.includes('where=')")
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length === 2")
            assert sorted(page_hit_ids(page)) == ["w-2020", "w-2022"] and not page.query_selector("#status.error")

            page.query_selector("#hits li.hit button.like").click()  # the documents like it, filter and all
            page.wait_for_function("location.search.includes('like=')")
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length === 1")
            assert page_hit_ids(page)[0] in {"w-2020", "w-2022"} and page.input_value("#where") == " year>=2020 ; ; year<2024 "

            page.go_back()
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length === 2")
            assert sorted(page_hit_ids(page)) == ["w-2020", "w-2022"]

            page.fill("#where", '{"year": {"$gte": 2020}, "team": {"$nin": ["a", "x;y"]}}')  # sent whole: ';' in it
            page.click("#search button")
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length === 2")
            assert sorted(page_hit_ids(page)) == ["w-2020", "w-2022"] and not page.query_selector("#status.error")

            page.fill("#where", "year>=true; year>=2020")  # the server's refusal, as the page says errors
            page.click("#search button")
            page.wait_for_selector("#status.error")
            assert "gives 'year' $gte twice" in page.inner_text("#status") and not page.query_selector_all("#hits li")


    def test_search_page_shows_a_hits_whole_document_with_its_passage_marked(self, browser, server, http):
        """The passage is cut by code points (the 𝔠𝔞𝔱 🐈 before it are two UTF-16 units each in
        JavaScript), scrolled into view, and the document's text is text, never HTML."""
        from urllib.parse import urlencode

        lines = [f"Line {i}: the garden path needs weeding and the fence needs a coat of paint." for i in range(20)]
        text = "\n".join(["𝔠𝔞𝔱 🐈 <b>not bold</b> <img src=x onerror=alert(1)>", *lines,
                          "The lighthouse keeper polished the brass lamp at midnight."])
        http.post("/v1/collections/scratch/documents", json={"documents": [{"id": "h4/page", "text": text}]})
        address = {"collection": "scratch", "query": "a lighthouse keeper polishing a brass lamp", "mode": "dense",
                   "k": "1", "where": "id=h4/page"}
        try:
            with chromium_page(browser, server, "/?" + urlencode(address)) as page:
                page.fill("#key", server.key)
                page.click("#key-form button")
                hit = page.wait_for_selector("#hits li.hit")
                assert int(hit.query_selector(".meta").inner_text().split("chunk ")[1].split(" ")[0]) > 5
                hit.query_selector("button.whole").click()
                mark = page.wait_for_selector("#hits .document mark")
                assert mark.text_content() == hit.query_selector(".text").text_content()
                assert "lighthouse keeper" in mark.text_content()
                panel = hit.query_selector(".document")
                assert panel.text_content() == text and panel.query_selector("b, img") is None
                assert page.evaluate("""(mark) => {
                    const m = mark.getBoundingClientRect(), p = mark.parentElement.getBoundingClientRect();
                    return p.top <= m.top && m.bottom <= p.bottom && 0 <= m.top && m.bottom <= innerHeight;
                }""", mark), "the passage was not scrolled into view"
                assert page.evaluate("(panel) => panel.scrollTop", panel) > 0  # it was below the panel's fold
                hit.query_selector("button.whole").click()  # a second click hides it
                page.wait_for_selector("#hits .document", state="detached")
                assert not page.query_selector("#status.error")
        finally:
            http.delete("/v1/collections/scratch/documents/h4%2Fpage")


    def test_search_page_marks_the_querys_words_as_text_never_html(self, browser, server, http):
        """The hit's highlights in <mark>s, cut by code points (𝔠𝔞𝔱 is six UTF-16 units), the
        words inside markup marked as text: no element, no script from the document."""
        from urllib.parse import urlencode

        text = "𝔠𝔞𝔱 <b>lighthouse</b> keeper <img src=x onerror=alert(1)> polished the brass lamp"
        http.post("/v1/collections/scratch/documents", json={"documents": [{"id": "h4/marks", "text": text}]})
        address = {"collection": "scratch", "query": "lighthouse img onerror", "mode": "lexical", "k": "1",
                   "where": "id=h4/marks"}
        try:
            with chromium_page(browser, server, "/?" + urlencode(address)) as page:
                dialogs = []
                page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
                page.fill("#key", server.key)
                page.click("#key-form button")
                passage = page.wait_for_selector("#hits li.hit .text")
                body = {"query": "lighthouse img onerror", "k": 1, "mode": "lexical", "where": ["id=h4/marks"]}
                hit_text = http.post("/v1/collections/scratch/search", json=body).json()["data"][0]
                assert passage.text_content() == hit_text["text"] and hit_text["text"] in text
                marks = [m.text_content() for m in passage.query_selector_all("mark")]
                assert marks == [hit_text["text"][a:b] for a, b in hit_text["highlights"]]
                assert hit_text["text"].startswith("𝔠𝔞𝔱") and marks[0] == "lighthouse"  # past the 𝔠𝔞𝔱
                assert passage.query_selector("b, img") is None and not dialogs
        finally:
            http.delete("/v1/collections/scratch/documents/h4%2Fmarks")


    def test_search_page_lists_the_documents_like_a_hit_at_an_address_of_their_own(self, browser, server, http):
        from urllib.parse import urlencode

        address = {"collection": "docs", "query": "magma and lava", "mode": "dense", "docs": "1"}
        like = [h["id"] for h in http.post(SIMILAR, json={"id": "volcano", "k": 10}).json()["data"]]
        with chromium_page(browser, server, "/?" + urlencode(address)) as page:
            page.fill("#key", server.key)
            page.click("#key-form button")
            first = page.wait_for_selector("#hits li.hit")
            assert page_hit_ids(page)[0] == "volcano"
            first.query_selector("button.like").click()
            page.wait_for_function("location.search.includes('like=volcano')")
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id tides')")
            assert page_hit_ids(page) == like and "volcano" not in like
            assert "collection=docs" in page.url and "like volcano" in page.inner_text("#status")
            assert page.input_value("#query") == ""

            page.go_back()  # the search again
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id volcano')")
            assert page.input_value("#query") == "magma and lava"
            page.go_forward()
            page.wait_for_function("document.querySelector('#hits .meta')?.innerText.includes('id tides')")
            page.reload()  # as a bookmark opens it
            page.wait_for_function("document.querySelectorAll('#hits li.hit').length > 0")
            assert page_hit_ids(page) == like


    def test_api_docs_render_offline_in_chromium(self, browser, server):
        """/docs is Swagger UI with its files served by the server itself."""
        with chromium_page(browser, server, "/docs") as page:
            page.wait_for_selector('.opblock-summary-path[data-path="/v1/embeddings"]')
            assert page.query_selector('.opblock-summary-path[data-path="/v1/collections/{name}/search"]') is not None
            assert page.query_selector("button.authorize") is not None  # where a key is given


    # -- following the collections under the server (the app in-process, real collections) ---------------


def drive(embedder, home, script, names=(), settings=None):
    """``script(client, served)`` against the app in-process over ``home``, its lifespan run
    (batcher up; the collections closed after), as `semsearch serve [NAMES] --home HOME` builds it."""
    from semsearch.server.app import create_app
    from semsearch.server.served import Served
    from semsearch.server.settings import Settings

    served = Served(embedder, names, home=home, device="cpu")
    app = create_app(embedder, served, settings or Settings())

    async def main():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=DEADLINE) as client:
            return await script(client, served)
    return asyncio.run(main())


def make(home, name, docs: dict, **settings):
    from semsearch.collection import Collection

    with Collection.create(home / name, **settings) as coll:
        coll.add_texts(list(docs.values()), ids=list(docs))


async def top_ids(client, name, query, k=3) -> list[str]:
    r = await client.post(f"/v1/collections/{name}/search", json={"query": query, "k": k})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["data"]]


def test_a_collection_removed_and_made_anew_under_the_server_is_served_anew(tmp_path, embedder):
    """`semsearch rm notes` + `semsearch index ... --name notes` while serving: the server
    answered 404 'was removed while it was open' for good, until a restart."""
    from semsearch.collection import delete_collection

    make(tmp_path, "notes", {"old": DOCS["volcano"][0]})

    async def script(client, served):
        assert await top_ids(client, "notes", "lava and magma") == ["old"]
        async with served.use("notes") as in_flight:  # a search that took it before the rm
            delete_collection(tmp_path / "notes")
            removed = await client.post("/v1/collections/notes/search", json={"query": "lava"})
            assert "was removed while it was open" in error_of(removed, 404)["message"]
            make(tmp_path, "notes", {"new": DOCS["bread"][0]})
            assert await top_ids(client, "notes", "how to bake bread") == ["new"]
            assert not in_flight.store.closed, "closed under a request still using it"
        assert in_flight.store.closed, "the replaced collection was left open"
        assert (await client.get("/v1/collections/notes")).json()["documents"] == 1

    drive(embedder, tmp_path, script, names=("notes",))


def test_a_request_that_gives_no_k_or_limit_is_not_refused_for_the_default_past_the_servers_cap(tmp_path, embedder):
    """`serve --max-k 5`: a search that gave no k was a 413 'k must be at most 5, got 10'."""
    from semsearch.server.settings import Settings

    make(tmp_path, "notes", {f"n{i:02}": f"Note {i}: the weather on day {i} was {'wet' if i % 2 else 'dry'}."
                             for i in range(12)})

    async def script(client, served):
        for route, body in (("search", {"query": "was it wet or dry"}), ("similar", {"id": "n00"})):
            r = await client.post(f"/v1/collections/notes/{route}", json=body)
            assert r.status_code == 200 and len(r.json()["data"]) == 5, r.text
            r = await client.post(f"/v1/collections/notes/{route}", json={**body, "k": 6})
            assert "k must be at most 5, got 6" in error_of(r, 413)["message"]
        page = (await client.get("/v1/collections/notes/documents")).json()
        assert len(page["data"]) == 5 and page["has_more"]

    drive(embedder, tmp_path, script, names=("notes",), settings=Settings(max_k=5, max_page=5))


def test_started_without_names_a_collection_made_later_is_listed_and_searched(tmp_path, embedder):
    make(tmp_path, "first", {"tides": DOCS["tides"][0]})

    async def script(client, served):
        make(tmp_path, "later", {"violin": DOCS["violin"][0]})
        listed = (await client.get("/v1/collections")).json()["data"]
        assert [c["name"] for c in listed] == ["first", "later"]
        assert await top_ids(client, "later", "a string instrument played with a bow") == ["violin"]
        assert (await client.get("/readyz")).json()["collections"] == ["first", "later"]
        error_of(await client.get("/v1/collections/nope"), 404)

    drive(embedder, tmp_path, script)


def test_started_without_names_a_broken_collection_under_home_stops_none_of_the_others(tmp_path, embedder):
    """One collection whose store is not a semsearch store (a half-copied folder) kept
    `semsearch serve` from starting at all."""
    make(tmp_path, "good", {"tides": DOCS["tides"][0]})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "store.sqlite").write_bytes(b"not a database, a half-copied file" * 100)

    async def script(client, served):
        assert await top_ids(client, "good", "the moon pulls the sea") == ["tides"]
        assert [c["name"] for c in (await client.get("/v1/collections")).json()["data"]] == ["good"]
        broken = await client.get("/v1/collections/broken")
        assert broken.status_code >= 400 and "broken" in broken.json()["error"]["message"]

    drive(embedder, tmp_path, script)


def test_started_with_names_a_collection_made_later_is_not_served(tmp_path, embedder):
    make(tmp_path, "first", {"tides": DOCS["tides"][0]})

    async def script(client, served):
        make(tmp_path, "later", {"violin": DOCS["violin"][0]})
        assert "is served here" in error_of(await client.get("/v1/collections/later"), 404)["message"]
        assert [c["name"] for c in (await client.get("/v1/collections")).json()["data"]] == ["first"]

    drive(embedder, tmp_path, script, names=("first",))


def other_model(model_folder, tmp_path) -> Path:
    """The same weights under another name: a model a collection may be built with, not this server's."""
    import shutil

    other = shutil.copytree(model_folder, tmp_path / "models" / "other-minilm")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "name": "test/other-minilm"}))
    return other


def test_a_collection_of_another_model_is_refused_with_409_naming_both(tmp_path, embedder, model_folder):
    other = other_model(model_folder, tmp_path)
    home = tmp_path / "home"
    make(home, "first", {"tides": DOCS["tides"][0]})

    async def script(client, served):
        make(home, "alien", {"bread": DOCS["bread"][0]}, model=str(other))
        for r in [await client.get("/v1/collections/alien"),
                  await client.post("/v1/collections/alien/search", json={"query": "bread"})]:
            message = error_of(r, 409)["message"]
            assert "test/other-minilm" in message and MODEL in message
        listed = await client.get("/v1/collections")
        assert listed.status_code == 200 and [c["name"] for c in listed.json()["data"]] == ["first"]

    drive(embedder, home, script)


def counted_opens(monkeypatch) -> list:
    """From now on, the names Collection.open is asked for (the real open does the work)."""
    from semsearch.collection import Collection

    opened = []
    real_open = Collection.open.__func__

    def counted_open(cls, *args, **kwargs):
        opened.append(args[0])
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(Collection, "open", classmethod(counted_open))
    return opened


def test_concurrent_first_requests_open_a_new_collection_once(tmp_path, embedder, monkeypatch):
    async def script(client, served):
        make(tmp_path, "later", {"violin": DOCS["violin"][0]})
        opened = counted_opens(monkeypatch)
        answers = await asyncio.gather(*[top_ids(client, "later", f"violin bow {i}") for i in range(8)])
        assert answers == [["violin"]] * 8
        assert opened == ["later"], "opened more than once"

    drive(embedder, tmp_path, script)


# -- starting and stopping -------------------------------------------------------------------------
def test_non_loopback_without_a_key_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "semsearch.server", "--host", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, env=server_env(), timeout=DEADLINE)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: refusing to listen on 0.0.0.0 without an API key")
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_client_that_hangs_up_costs_no_more_model_time(tmp_path, model_folder):
    """The server notices a client leave while its texts wait for the model, and the batcher
    skips the rows nobody waits for. One text a run, one run at a time: many runs to skip."""
    proc, url = start_server(["--home", str(tmp_path), "--max-batch-size", "1", "--workers", "1"], tmp_path / "log")

    def metric(name: str, **labels) -> float:
        text = httpx.get(url + "/metrics", timeout=30).text
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == name and labels.items() <= s.labels.items())

    texts = [f"{i} " + "a client that will not wait for its answer, " * 5 for i in range(64)]
    conn = HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    try:
        conn.request("POST", "/v1/embeddings", body=json.dumps({"model": MODEL, "input": texts}),
                     headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + DEADLINE
        while metric("semsearch_queue_texts") < len(texts):  # it is in the batcher
            assert time.monotonic() < deadline
            time.sleep(0.005)
        conn.close()  # the client hangs up
        while metric("semsearch_queue_texts") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert metric("semsearch_batch_texts_sum") < len(texts), "the server embedded every text for nobody"
        assert metric("semsearch_http_request_duration_seconds_count", route="/v1/embeddings", status="499") == 1
    finally:
        conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)


def test_sigterm_drains_in_flight_requests_and_closes_collections(tmp_path, model_folder, embedder):
    from semsearch.collection import Collection

    with Collection.create(tmp_path / "c") as c:
        c.add_texts(["seed text"], ids=["s"])
    proc, url = start_server([str(tmp_path / "c"), "--max-wait-ms", "50"], tmp_path / "log")
    texts = [f"{i} " + "drain me " * 30 for i in range(192)]
    result = {}

    def slow():
        result["r"] = httpx.post(url + "/v1/embeddings", json={"model": MODEL, "input": texts}, timeout=DEADLINE)

    try:
        httpx.post(url + "/v1/collections/c/documents", json={"documents": [{"text": "written"}]}, timeout=60)
        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + DEADLINE
        while "semsearch_queue_texts 192.0" not in httpx.get(url + "/metrics").text:  # it is in the batcher
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        thread.join(DEADLINE)
        assert proc.wait(DEADLINE) in (0, -signal.SIGTERM)
    finally:
        proc.kill()
    r = result["r"]
    assert r.status_code == 200 and len(r.json()["data"]) == 192
    np.testing.assert_allclose(r.json()["data"][7]["embedding"], embedder.embed([texts[7]])[0], atol=1e-6)
    assert not (tmp_path / "c" / "store.sqlite-wal").exists(), "the collection was not closed"
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


# -- deletes of nothing, refusals remembered ----------------------------------------------------
def test_delete_of_no_ids_deletes_nothing_and_says_0_as_the_library_does(http):
    """Collection.delete(ids=[]) returns 0; the same call over HTTP was a 400."""
    before = http.get("/v1/collections/scratch").json()["documents"]
    assert http.post("/v1/collections/scratch/documents/delete", json={"ids": []}).json() == {"deleted": 0}
    assert http.get("/v1/collections/scratch").json()["documents"] == before


def test_a_collection_of_another_model_is_refused_from_memory_until_made_anew(tmp_path, embedder, model_folder,
                                                                               monkeypatch):
    """Each request re-opened it (milliseconds, and the lock every open takes) only to refuse it."""
    from semsearch.collection import delete_collection

    other = other_model(model_folder, tmp_path)
    home = tmp_path / "home"
    make(home, "alien", {"bread": DOCS["bread"][0]}, model=str(other))

    async def script(client, served):
        opened = counted_opens(monkeypatch)
        for _ in range(3):
            message = error_of(await client.post("/v1/collections/alien/search", json={"query": "bread"}), 409)
            assert "test/other-minilm" in message["message"]
        assert [c["name"] for c in (await client.get("/v1/collections")).json()["data"]] == []
        assert opened == ["alien"], "opened again only to be refused again"
        delete_collection(home / "alien")  # `semsearch rm alien`, then made anew with the server's model
        make(home, "alien", {"violin": DOCS["violin"][0]})
        assert await top_ids(client, "alien", "a string instrument played with a bow") == ["violin"]

    drive(embedder, home, script)
