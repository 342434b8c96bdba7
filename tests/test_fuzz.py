"""A bounded, seeded fuzz of the input surface: odd values at every field of every HTTP
route (one real `semsearch serve` for the module), and the same kinds of values into the
Python API and the CLI. Every answer must be a success or a refusal in the error shape
(HTTP 4xx with one line naming the problem; `error: ...` and a non-zero exit; one of our
own errors), never a 5xx, a dropped connection, a traceback or a changed collection.

The rows under "defects" are what the fuzz found, each kept as its own minimal test.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from semsearch import validation
from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import SemsearchError

SEED = 20240611
RANDOM_REQUESTS = 150  # after the sweep's 1,387: 1,537 requests in all
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = {  # id -> (text, metadata)
    "volcano": ("Volcanoes erupt when magma rises through the crust and escapes as lava and ash.",
                {"topic": "geology", "n": 1}),
    "bread": ("Knead flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
              {"topic": "cooking", "n": 2.5, "flag": True}),
    "tides": ("Ocean tides are caused by the gravitational pull of the moon and the sun.",
              {"topic": "science", "tags": ["moon", "sea"]}),
}
KNOWN = ("magma and lava from a volcano", "volcano")  # a query and the document it finds
LIMITS = ["--max-k", "50", "--max-inputs", "64", "--max-chars", "2000", "--max-body-bytes", str(64 * 1024)]
DEADLINE = 120

# -- the values tried -------------------------------------------------------------------------
NUMBERS = [0, -1, 1, 3, -0.0, 0.5, 3.0, 1e308, -1e308, 1e-320, math.nan, math.inf, -math.inf,
           2**31, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 10**30, 10**9]
FTS = ['"', "*", "NEAR(", "NEAR(lava ash, 2)", "AND OR NOT", "lava AND", "NOT lava", "-", "-lava", "^", "^lava",
       ":", "text:lava", "text : lava", "{text}: lava", "lava*", "*lava", "(", ")", "((lava)", '"lava', "lava OR",
       "+", "lava + ash", "rowid:1", "chunks_fts", "a'b", "%", "_", "\\"]
STRINGS = ["", " ", "\t\n", "x", "lava", "a" * 2001, "b" * 300, "\ud800", "a\udfffb", "\0", "a\0b",
           "\x01\x02\x1b[31m", "\u200b", "\ufeff", "\u00a0", "é", "𝔠𝔞𝔱", "火山", "true", "null", "1", "-0",
           "1e999", "9" * 30, "[" * 1000, "{}", "~nosuchuser/x", "/", "..", "%2F", "geology", *FTS]
KEYS = ["topic", "n", "flag", "tags", "id", "source", "metadata.topic", "metadata.source", "", " ", "$", "a.b",
        'a"b', "a\0b", "\ud800", "é", "a[0]", "$.topic", "\\", "k" * 2000, "unknown"]

OPERATORS = [*validation.WHERE_OPERATORS, "$near", "$regex", "$and", "$or", "$not", "gte", "$GTE", "$", "",
             "$in ", "$eq\0", "\ud800", "$exists"]
OPERANDS = [[], [1, "a", None, True], [[1], [2]], [["moon"]], {"$gte": 1}, {"$in": [1]}, {}, [math.nan],
            [math.inf, -math.inf], [{"a": 1}], list(range(1_001)), ["moon"] * 5_000, [None] * 1_000]
WHERE_STRINGS = [  # --where's grammar (a URL's where=, a body's list form), odd
    "n>=1", "n>1", "n<2.5", "n<=2.5", "n!=1", "n==1", "tags=moon", "topic!=geology", "flag=true", "n>", ">=1", "n>=",
    "n=>1", "n<>1", "n!==1", "n===1", "n>>1", "n<<1", "n>=<1", "=", "!=", "<", ">=", "==", "n>=nan", "n<inf",
    "n>=-inf", "n>=1e999", "n>=" + "9" * 30, "n<=-0", "n>=\0", "\ud800>=1", "n>=\ud800", " n >= 1 ", "n\n>=1",
    "topic=a=b", "topic==", '{"n": {"$gte": 1}}', '{"n": {"$near": 1}}', '{"n": {}}', '{"n": [1]}', "{nope",
    "{", "[]", '"n"', "{}", '{"n": {"$gte": NaN}}', '{"n": {"$lt": Infinity}}', '{"n": {"$gte": true}}',
    '{"n": {"$gte": null}}', '{"n": {"$exists": "yes"}}', '{"n": {"$in": 1}}', '{"n": {"$in": [[1]]}}',
    '{"n": {"$in": [%s]}}' % ",".join(["1"] * 1_001), '{"n": {"$gte": 1, "$gt": 0, "$lt": 3, "$lte": 2}}',
    '{"n": 1, "n": 2}', '{"n": {"$eq": {"$eq": 1}}}', '{"n": ' * 400 + "1" + "}" * 400, "{" * 5000, '{"n": ' + "[" * 5000,
    '{"\\ud800": 1}', '{"tags": {"$nin": ["moon"]}, "topic": {"$ne": "x"}}', '{"": 1}', '{"a\\"b": 1}']


def deep(depth: int, leaf="x"):
    value = leaf
    for i in range(depth):
        value = {"d": value} if i % 2 else [value]
    return value


class Values:
    """Odd JSON values from a seeded generator (NaN, Infinity and lone surrogates are
    written as Python's json writes them: NaN, Infinity, "\\ud800")."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def pick(self, items):
        return items[self.rng.randrange(len(items))]

    def scalar(self):
        return self.pick([None, True, False, *NUMBERS, *STRINGS])

    def any(self, depth: int = 0):
        roll = self.rng.random()
        if depth > 2 or roll < 0.6:
            return self.scalar()
        if roll < 0.75:
            return [self.any(depth + 1) for _ in range(self.rng.randrange(4))]
        if roll < 0.9:
            return {self.pick(KEYS): self.any(depth + 1) for _ in range(self.rng.randrange(4))}
        return self.pick([deep(25), deep(5), [1, "a", None, [2]], ["x"] * 65, {"$in": ["a"]}, {}, []])

    def text(self):
        return self.pick(STRINGS) if self.rng.random() < 0.8 else self.any()

    def operators(self):
        """{op: operand} for one key: a known operator with an odd operand, or an odd operator."""
        ops = {}
        for _ in range(self.rng.randrange(1, 4)):
            op = self.pick(validation.WHERE_OPERATORS) if self.rng.random() < 0.7 else self.pick(OPERATORS)
            ops[op] = self.pick([self.scalar, self.any, lambda: self.pick(OPERANDS),
                                 lambda: [self.scalar() for _ in range(self.rng.randrange(4))]])()
        return ops

    def where(self):
        roll = self.rng.random()
        if roll < 0.15:
            return self.any()
        if roll < 0.3:  # the list form: --where's strings
            return [self.pick(WHERE_STRINGS) if self.rng.random() < 0.8 else self.text()
                    for _ in range(self.rng.randrange(4))]
        if roll < 0.55:
            return {self.pick(KEYS[:8]): self.operators() for _ in range(self.rng.randrange(1, 3))}
        keys = [self.pick(KEYS[:8]) if self.rng.random() < 0.7 else self.pick(KEYS) for _ in range(3)]
        return {key: self.scalar() if self.rng.random() < 0.8 else self.any()
                for key in keys[:self.rng.randrange(1, 4)]}

    def k(self):
        return self.pick([0, -1, 1, 5, 50, 51, 10**9, 2**64, 2.0, 2.5, True, False, None, "5", math.nan,
                          math.inf, 1e308, -0.0, [5], {}])

    def mutate(self, body: dict, odd: dict) -> dict:
        """``body`` (a good one) with one field, now and then two, given an odd value from
        ``odd`` (field -> generator), or dropped, or an unknown field added: one mistake
        at a time reaches the checks behind the first."""
        for _ in range(1 + (self.rng.random() < 0.25)):
            roll = self.rng.random()
            if roll < 0.85:
                name = self.pick(sorted(odd))
                body[name] = odd[name]()
            elif roll < 0.93 and body:
                del body[self.pick(sorted(body))]
            else:
                body[self.pick(["extra", "temperature", "\ud800", "", "Query", "limit"])] = self.scalar()
        return body

    def embeddings(self) -> dict:
        return self.mutate({"model": MODEL, "input": self.pick(["lava", ["a", "b"]])}, {
            "model": lambda: self.pick([*STRINGS, "all-MiniLM-L6-v2", None, 1, [MODEL]]),
            "input": lambda: self.pick([self.text, lambda: [self.text() for _ in range(3)], lambda: [1, 2],
                                        lambda: [[101, 102]], lambda: ["x"] * 65])(),
            "encoding_format": lambda: self.pick(["float", "base64", "int8", None, 1, ""]),
            "dimensions": lambda: self.pick([384, 256, 0, -1, None, 384.0, True, "384", 2**64]),
            "user": self.scalar,
            "input_type": lambda: self.pick(["query", "passage", "doc", None, 0, "\ud800"])})

    def search(self) -> dict:
        body = {"query": "lava"} if self.rng.random() < 0.7 else {"queries": ["lava", "moon"]}
        body["mode"] = self.pick(["dense", "lexical", "hybrid"])
        return self.mutate(body, {
            "query": self.text,
            "queries": lambda: [self.text() for _ in range(self.rng.randrange(4))] if self.rng.random() < 0.8
            else self.any(),
            "k": self.k,
            "mode": lambda: self.pick(["dense", "lexical", "hybrid", "fuzzy", None, 1, "", "LEXICAL"]),
            "where": self.where,
            "docs": lambda: self.pick([True, False, None, 1, "true", 0.0])})

    def similar(self) -> dict:
        return self.mutate({"id": self.pick(list(DOCS))}, {
            "id": lambda: self.pick([*STRINGS, 7, True, None, ["volcano"], {}, 2**64, "k" * 1001, "fz-1"]),
            "k": self.k,
            "where": self.where,
            "docs": lambda: self.pick([True, False, None, 1, "true", 0.0])})

    def document(self) -> dict:
        body = {"text": f"fuzz note {self.rng.randrange(10**6)}", "id": f"fz-{self.rng.randrange(40)}",
                "metadata": {"topic": "fuzz"}}
        return self.mutate(body, {
            "text": self.text,
            "id": lambda: self.pick([*STRINGS, 7, 7.5, True, None, ["a"], {}, 2**64, "k" * 1001]),
            "metadata": lambda: self.pick([self.any, lambda: deep(25, {}), lambda: {"k": deep(19)},
                                           lambda: {self.pick(KEYS): self.any()}])()})

    def documents(self) -> dict:
        roll = self.rng.random()
        if roll < 0.1:
            return {"documents": self.any()}
        docs = [self.document() if self.rng.random() < 0.7 else
                {"text": f"fuzz note {self.rng.randrange(10**6)}", "id": f"fz-{self.rng.randrange(40)}"}
                for _ in range(self.rng.randrange(0, 4))]
        return {"documents": docs} if roll < 0.9 else self.mutate({"documents": docs}, {"documents": self.any})

    def path_part(self) -> str:
        raw = self.pick([*STRINGS[:30], "fz-1", "fz-2", "docs", "a/b", "%", "?x=1", "#f", " ", "k" * 3000])
        return url_part(raw, self.pick(["", "/"]))


def raw_json(value) -> bytes:
    text = json.dumps(value)  # ensure_ascii: a lone surrogate is written as \\ud800, NaN as NaN
    return text.encode()


SCALARS = [None, True, False, *NUMBERS, *STRINGS]
SEARCH_PATH, DOCUMENTS_PATH = "/v1/collections/docs/search", "/v1/collections/docs/documents"
SIMILAR_PATH = "/v1/collections/docs/similar"


def url_part(value: str, safe: str = "") -> str:
    """A value as a URL's path segment or query value (a lone surrogate as its UTF-8 bytes would be)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe=safe)


def sweep(values: Values):
    """Every odd value once at each field that reaches the library's checks (one mistake
    per request, the rest of the body good): (method, path, raw body)."""
    def search(**fields):
        body = {"query": "lava", "mode": values.pick(["dense", "lexical", "hybrid"]), **fields}
        return "POST", SEARCH_PATH, raw_json(body)

    def document(**fields):
        doc = {"text": f"fuzz note {values.rng.randrange(10**6)}", "id": f"fz-{values.rng.randrange(40)}", **fields}
        return "POST", DOCUMENTS_PATH, raw_json({"documents": [doc]})

    def similar(**fields):
        return "POST", SIMILAR_PATH, raw_json({"id": values.pick(list(DOCS)), **fields})

    for value in STRINGS:
        yield search(query=value)
        yield "POST", "/v1/embeddings", raw_json({"model": MODEL, "input": ["lava", value]})
        yield document(text=value)
        yield document(id=value)
        yield similar(id=value)
        yield "GET", f"{DOCUMENTS_PATH}/{url_part(value, values.pick(['', '/']))}", None
    for value in values.rng.sample([*STRINGS, *map(str, NUMBERS)], 12):  # a page's query parameters
        for name in ("limit", "after", "where", "text"):
            yield "GET", f"{DOCUMENTS_PATH}?{name}={url_part(value)}", None
    for value in SCALARS:
        yield search(where={"topic": value})  # a metadata key
        yield search(where={values.pick(KEYS[1:8]): value})
    for value in values.rng.sample(SCALARS, 30):
        yield document(metadata={values.pick(KEYS): value})
    for key in KEYS:
        yield search(where={key: "geology"})
    for value in values.rng.sample(SCALARS, 20):
        yield search(queries=["moon", value])
        yield search(k=value)
        yield similar(k=value)
        yield similar(where={values.pick(KEYS[:8]): value})
        yield similar(docs=value)
    for k in (0, -1, 51, 10**9, 2**64, 2.0, True, "5", math.nan, math.inf, -0.0, [5]):
        yield search(k=k)
    for where in odd_wheres(values):  # operators, odd operands, --where's strings, at every door of where
        yield search(where=where)
        yield similar(where=where)
        if isinstance(where, dict):  # never one that could delete the seeded documents
            yield "POST", f"{DOCUMENTS_PATH}/delete", raw_json({"where": {**where, "id": "fz-never"}})
    for text in WHERE_STRINGS:
        yield "GET", f"{DOCUMENTS_PATH}?where={url_part(text)}&where=n%3E%3D1", None
        yield "POST", f"{DOCUMENTS_PATH}/delete", raw_json({"where": [text, "id=fz-never"]})


def odd_wheres(values: Values):
    """Each odd operator and operand on a key, each odd --where string in the list form, then
    a seeded sample of mixes."""
    for op in OPERATORS:
        yield {values.pick(KEYS[:8]): {op: values.pick([1, "moon", [1, "moon"], True])}}
    for operand in [*OPERANDS, *values.rng.sample(SCALARS, 15), deep(25), deep(5)]:
        for op in values.rng.sample(validation.WHERE_OPERATORS, 3):
            yield {values.pick(KEYS[:8]): {op: operand}}
    for text in WHERE_STRINGS:
        yield [text]
    for _ in range(20):
        yield values.where()


def requests_of(values: Values, n: int):
    """The sweep, then n requests with a random mistake or two, spread over every route:
    (method, path, raw body or None)."""
    yield from sweep(values)
    for i in range(n):
        route = i % 8
        if route == 0:
            yield "POST", "/v1/embeddings", raw_json(values.embeddings())
        elif route in (1, 2):  # a search, now and then the documents like one
            name = "docs" if values.rng.random() < 0.8 else values.path_part()
            if route == 2 and values.rng.random() < 0.5:
                yield "POST", f"/v1/collections/{name}/similar", raw_json(values.similar())
            else:
                yield "POST", f"/v1/collections/{name}/search", raw_json(values.search())
        elif route == 3:
            yield "POST", "/v1/collections/docs/documents", raw_json(values.documents())
        elif route == 4:
            doc = f"fz-{values.rng.randrange(40)}" if values.rng.random() < 0.6 else values.path_part()
            yield "DELETE", f"/v1/collections/docs/documents/{doc}", None
        elif route == 5:
            yield "GET", "/v1/models/" + (MODEL if values.rng.random() < 0.5 else values.path_part()), None
        elif route == 6:
            query = "&".join(f"{values.path_part()}={values.path_part()}" for _ in range(values.rng.randrange(1, 3)))
            path = values.pick(["/v1/collections", "/v1/collections/docs", "/v1/models", "/readyz",
                                "/v1/collections/" + values.path_part(), DOCUMENTS_PATH,
                                f"{DOCUMENTS_PATH}/{values.pick([*DOCS, values.path_part()])}"])
            yield "GET", f"{path}?{query}", None
        else:  # a body of another shape: not an object, or not JSON at all
            path = values.pick(["/v1/embeddings", SEARCH_PATH, DOCUMENTS_PATH, SIMILAR_PATH])
            body = values.pick([lambda: raw_json(values.any()), lambda: b"9" * 5000, lambda: b"[" * 3000,
                                lambda: b'{"query": 1e999}', lambda: b'{"query": "lava", "k": 1' + b"0" * 400 + b"}",
                                lambda: b'{"query": "\\ud800\\udc00"}', lambda: b"\xc3\x28", lambda: b"",
                                lambda: b'{"query": "lava", "query": 1}', lambda: raw_json(values.search())[:-1]])()
            yield "POST", path, body


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_folder):
    """`semsearch serve docs` on a free loopback port, without a key; yields its URL and home."""
    home = tmp_path_factory.mktemp("fuzz-home")
    with Collection.create(home / "docs") as docs:
        docs.add_texts([t for t, _ in DOCS.values()], ids=list(DOCS), metadata=[m for _, m in DOCS.values()])
    port, log = free_port(), home / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "SEMSEARCH_API_KEY"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "semsearch.server", "docs", "--home", str(home),
                                 "--port", str(port), *LIMITS], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url, home, log
    proc.send_signal(signal.SIGTERM)
    proc.wait(DEADLINE)


def known_search(client: httpx.Client) -> tuple[str, float]:
    r = client.post("/v1/collections/docs/search", json={"query": KNOWN[0], "k": 1, "mode": "dense"})
    hit = r.json()["data"][0]
    return hit["id"], round(hit["score"], 5)


def problem(response: httpx.Response) -> str | None:
    """What is wrong with an answer to an odd request; None when it is a success or a
    refusal in the error shape with one line that says something."""
    if response.status_code >= 500 or response.status_code < 200:
        return f"status {response.status_code}"
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return "a refusal that is not in the error shape"
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message.strip() or "\n" in message or "Traceback" in message \
                or message == "There was an error parsing the body":  # FastAPI's, for any failure
            return f"an unhelpful message {message!r}"
    return None


def send(client: httpx.Client, method: str, path: str, body: bytes | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return client.request(method, path, content=body, headers=headers)


def fuzz(url: str, n: int, seed: int = SEED) -> tuple[list[str], set[str], set[str]]:
    """Send n generated requests; (defects, ids added, ids deleted) as the answers say."""
    defects, added, deleted = [], set(), set()
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as client:
        for method, path, body in requests_of(Values(seed), n):
            shown = f"{method} {path[:120]!r} {(body or b'')[:160]!r}"
            try:
                response = send(client, method, path, body)
            except httpx.TransportError as exc:
                defects.append(f"{shown}: connection {type(exc).__name__}")
                continue
            if (why := problem(response)) is not None:
                defects.append(f"{shown}: {why}: {response.text[:200]}")
            elif response.status_code == 200 and method == "POST" and path.endswith("/documents"):
                added |= set(response.json()["ids"])
            elif response.status_code == 200 and method == "DELETE":
                deleted.add(response.json()["id"])
                added.discard(response.json()["id"])
    return defects, added, deleted


def test_fuzzed_requests_get_answers_or_4xx_and_leave_the_collection_intact(served):
    url, home, log = served
    with httpx.Client(base_url=url, timeout=60) as client:
        before = known_search(client)
        assert before[0] == KNOWN[1]
        defects, added, deleted = fuzz(url, RANDOM_REQUESTS)
        assert not defects, "\n".join(defects[:20])
        assert not deleted & set(DOCS), "the fuzz deletes only ids it could have added"
        info = client.get("/v1/collections/docs").json()
        assert info["documents"] == len(DOCS) + len(added), (info, sorted(added))
        assert known_search(client) == before
        hits = client.post("/v1/collections/docs/search", json={"query": "fuzz note", "k": 50,
                                                                 "mode": "lexical"}).json()["data"]
        assert set(DOCS).isdisjoint(h["id"] for h in hits)


# -- the Python API and the CLI -----------------------------------------------------------------
@pytest.fixture(scope="module")
def coll_path(tmp_path_factory, model_folder) -> Path:
    """The module's collection for the library and the CLI (closed: each test opens it)."""
    path = tmp_path_factory.mktemp("fuzz-api") / "docs"
    with Collection.create(path) as coll:
        coll.add_texts([t for t, _ in DOCS.values()], ids=list(DOCS), metadata=[m for _, m in DOCS.values()])
    return path


def state(coll: Collection) -> tuple:
    """What the fuzz must leave as it was: the known search's hit and score, the seeded docs."""
    hit = coll.search(KNOWN[0], k=1, mode="dense")[0]
    kept = {h.id for h in coll.search("magma dough tides", k=10, mode="lexical")} & set(DOCS)
    return hit.id, round(hit.score, 5), sorted(kept)


def api_calls(values: Values, coll: Collection, embedder, live: set):
    """(label, call) for odd values at each argument of search, add_texts, delete,
    delete_path, get, documents, similar and embed; most values once at each, a seeded sample of the rest.
    ``live``: the ids the collection holds, kept up to date as the calls say."""
    def add(texts, **kw):
        live.update(coll.add_texts(texts, **kw))

    def delete(ids):
        if coll.delete(ids):
            live.difference_update(validation.id_list(ids))
    sample = values.rng.sample(SCALARS, 30)
    for v in SCALARS:
        yield f"search({v!r:.40})", lambda v=v: coll.search(v, mode=values.pick(MODES))
        yield f"where topic={v!r:.40}", lambda v=v: coll.search("lava", where={"topic": v}, mode="lexical")
        yield f"where {values.pick(KEYS[1:8])}={v!r:.40}", \
            lambda v=v, key=values.pick(KEYS[1:8]): coll.search("lava", where={key: v}, mode="lexical")
        yield f"add_texts([{v!r:.40}])", lambda v=v: add([v], ids=[f"fz-{values.rng.randrange(40)}"])
        yield f"add_texts(ids=[{v!r:.40}])", lambda v=v: add(["fuzz note"], ids=[v])
        yield f"add_texts(metadata={v!r:.40})", \
            lambda v=v: add(["fuzz note"], ids=["fz-m"], metadata=[{values.pick(KEYS): v}])
        yield f"delete({v!r:.40})", lambda v=v: delete(v if isinstance(v, str) and v.startswith("fz") else [v])
        if isinstance(v, str):
            yield f"delete_path({v!r:.40})", lambda v=v: coll.delete_path(v)
        yield f"get({v!r:.40})", lambda v=v: coll.get(v)
        yield f"similar({v!r:.40})", lambda v=v: coll.similar(v)
        yield f"documents(ids=[{v!r:.40}])", lambda v=v: list(coll.documents(ids=[v]))
        yield f"documents(after={v!r:.40})", lambda v=v: list(coll.documents(after=v, limit=2))
    for v in sample:
        for name in ("where", "limit", "text"):
            yield f"documents({name}={v!r:.40})", lambda v=v, name=name: list(coll.documents(**{name: v}))
        for name in ("k", "where", "docs"):
            yield f"similar({name}={v!r:.40})", lambda v=v, name=name: coll.similar(KNOWN[1], **{name: v})
        yield f"search(k={v!r:.40})", lambda v=v: coll.search("lava", k=v)
        yield f"search(mode={v!r:.40})", lambda v=v: coll.search("lava", mode=v)
        yield f"search(weights=({v!r:.40}, 1))", lambda v=v: coll.search("lava", weights=(v, 1))
        yield f"search(weights=({v!r:.40}, 0))", lambda v=v: coll.search("lava", weights=(v, 0))
        yield f"search(min_score={v!r:.40})", lambda v=v: coll.search("lava", min_score=v, mode="dense")
        yield f"search(rrf_k={v!r:.40})", lambda v=v: coll.search("lava", rrf_k=v)
        yield f"search(feedback_weight={v!r:.40})", lambda v=v: coll.search("lava", feedback_weight=v)
        yield f"search([lava, {v!r:.40}])", lambda v=v: coll.search(["lava", v], mode="lexical")
        yield f"search(where={v!r:.40})", lambda v=v: coll.search("lava", where=v)
        yield f"embed([{v!r:.40}])", lambda v=v: embedder.embed(["lava", v])
        yield f"embed({v!r:.40})", lambda v=v: embedder.embed(v)
        yield f"embed(kind={v!r:.40})", lambda v=v: embedder.embed(["lava"], kind=v)
        yield f"embed(batch_size={v!r:.40})", lambda v=v: embedder.embed(["lava"], batch_size=v)
    for where in odd_wheres(values):
        yield f"search(where={where!r:.60})", lambda w=where: coll.search("lava", where=w, mode="lexical")
        yield f"similar(where={where!r:.60})", lambda w=where: coll.similar(KNOWN[1], where=w)
        yield f"documents(where={where!r:.60})", lambda w=where: list(coll.documents(where=w, limit=5))
        if isinstance(where, dict):  # never one that could delete the seeded documents
            yield f"delete(where={where!r:.60})", lambda w=where: coll.delete(where={**w, "id": "fz-never"})
    for text in WHERE_STRINGS:
        yield f"where_conditions({text!r:.60})", \
            lambda t=text: coll.search("lava", where=validation.where_conditions([t, "n>=0"], "where"))
    for v in (deep(30), deep(19), {"k": [1, "a", None]}, {"\ud800": 1}, {1: 2}, [{"a": 1}], "x"):
        yield f"add_texts(metadata={v!r:.40})", lambda v=v: add(["fuzz note"], ids=["fz-m"], metadata=[v])
    yield "delete(10**5000)", lambda: delete(10**5000)
    yield "add_texts(ids=[10**5000])", lambda: add(["x"], ids=[10**5000])


MODES = ["dense", "lexical", "hybrid"]


def test_fuzzed_library_calls_return_or_raise_one_line_of_ours_and_keep_the_data(coll_path, embedder):
    defects, live = [], set(DOCS)
    with Collection.open(coll_path) as coll:
        before = state(coll)
        assert coll.count() == len(live)
        for label, call in api_calls(Values(SEED), coll, embedder, live):
            try:
                call()
            except SemsearchError as exc:
                if "\n" in str(exc).strip() or not str(exc).strip():
                    defects.append(f"{label}: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
                defects.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
        assert not defects, "\n".join(defects[:20])
        assert state(coll) == before and coll.count() == len(live)
    with Collection.open(coll_path) as coll:  # as another process would find it
        assert state(coll) == before and coll.count() == len(live)
        coll.delete(sorted(live - set(DOCS)))  # the next tests start from the seeded docs


def argv_text(value: str) -> str:
    """A value as a command line can hold it: no NUL; a lone surrogate as the one Python
    makes of a byte that is not UTF-8 (U+DC80..U+DCFF)."""
    return value.replace("\0", "").replace("\ud800", "\udcff").replace("\udfff", "\udcfe")


def cli_args(values: Values, path: str):
    texts = [argv_text(v) for v in STRINGS]
    pick = values.pick
    makers = [
        lambda: ["search", path, pick(texts) or "x", "--mode", pick(MODES), "-k", "3"],
        lambda: ["search", path, "lava", "--where", f"topic={pick(texts)}"],
        lambda: ["search", path, "lava", "--where", f"{pick([argv_text(k) for k in KEYS])}=geology"],
        lambda: ["search", path, "lava", "--where", f"source={pick(texts)}"],
        lambda: ["search", path, "lava", "--where", argv_text(pick(WHERE_STRINGS)), "--where", "n>=0"],
        lambda: ["documents", path, "--where", argv_text(pick(WHERE_STRINGS))],
        lambda: ["search", path, "lava", "-k", pick(texts + ["0", "-1", "2.5", "99999999999999999999"])],
        lambda: ["search", path, "lava", "--weights", pick(["5e-324,0", "nan,1", "1,inf", "-0,1", "1e308,1", ",", "1"])],
        lambda: ["search", path, "lava", "--min-score", pick(["nan", "inf", "-1e308", "x"])],
        lambda: ["add", path, "--text", pick(texts), "--id", f"fz-{values.rng.randrange(40)}"],
        lambda: ["add", path, "--text", "fuzz note", "--id", pick(texts)],
        lambda: ["add", path, "--text", "fuzz note", "--id", "fz-m", "--meta", f"{pick(texts)}={pick(texts)}"],
        lambda: ["delete", path, "--id", pick(texts)],
        lambda: ["delete", path, "--path", pick(texts)],
        lambda: ["embed", pick(texts)],
        lambda: ["embed", "lava", "--kind", pick(texts)],
    ]
    for i in range(3 * len(makers)):
        yield makers[i % len(makers)]()


def test_fuzzed_commands_exit_with_one_error_line_or_succeed(coll_path, tmp_path):
    defects = []
    with Collection.open(coll_path) as coll:
        before = state(coll)
    for args in cli_args(Values(SEED), str(coll_path)):
        result = CliRunner().invoke(cli, args, env={"SEMSEARCH_HOME": str(tmp_path)})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raised = result.exception is not None and not isinstance(result.exception, SystemExit)
        if raised or "Traceback" in result.output or "unexpected" in result.stderr or \
                result.exit_code != 0 and (len(lines) != 1 or not lines[0].startswith("error: ")):
            defects.append(f"{args!r:.200}: exit {result.exit_code}: {result.stderr[-300:]!r} {result.exception!r}")
    assert not defects, "\n".join(defects[:20])
    with Collection.open(coll_path) as coll:
        assert state(coll) == before


# -- defects the fuzz found, one test each ------------------------------------------------------
def test_a_json_number_past_pythons_digit_limit_is_a_400_that_says_so(served):
    url, _, _ = served
    r = httpx.post(url + "/v1/collections/docs/search", content=b'{"query": "lava", "k": ' + b"9" * 5000 + b"}",
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "5,000 digits" in r.json()["error"]["message"], r.text


def test_where_source_that_is_not_unicode_is_invalid_input(coll_path):
    from semsearch.errors import InvalidInput

    with Collection.open(coll_path) as coll:
        with pytest.raises(InvalidInput, match="not valid UTF-8"):
            coll.search("lava", where={"source": "\ud800"})  # JSON's "\ud800": was UnicodeEncodeError
        with pytest.raises(InvalidInput, match="not valid UTF-8"):
            coll.delete_path("/tmp/\udcff")  # a command line's byte 0xff: was UnicodeEncodeError from SQLite


def test_a_path_of_an_unknown_user_or_a_symlink_loop_matches_no_document(coll_path, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with Collection.open(coll_path) as coll:  # pathlib raised RuntimeError for both
        count = coll.count()
        for path in ("~no-such-user-here/notes", str(tmp_path / "a")):
            assert coll.search("lava", where={"source": path}) == []
            assert coll.delete_path(path) == 0
        assert coll.count() == count


def test_an_integer_id_too_long_to_write_out_is_invalid_input(coll_path):
    from semsearch.errors import InvalidInput

    with Collection.open(coll_path) as coll:  # str(10**5000) raised ValueError
        with pytest.raises(InvalidInput, match="ids"):
            coll.add_texts(["x"], ids=[10**5000])
        with pytest.raises(InvalidInput, match="ids"):
            coll.delete(10**5000)


def test_a_denormal_hybrid_weight_is_invalid_input(coll_path):
    from semsearch.errors import InvalidInput

    with Collection.open(coll_path) as coll:  # the best fused score rounded to 0: ZeroDivisionError
        with pytest.raises(InvalidInput, match="weights"):
            coll.search("lava", weights=(5e-324, 0))
        assert coll.search("lava", weights=(0, 1e-6), k=1)


def test_where_key_with_a_quote_backslash_or_control_character_finds_its_document(coll_path):
    with Collection.open(coll_path) as coll:  # (a JSON path could not name them; keys are matched by name)
        for key in ('a"b', "a\\b", "a\tb", "a\x1bb", "a.b", "$"):
            coll.add_texts(["a note with an odd metadata key"], ids=["odd-key"], metadata=[{key: 1}])
            assert [h.id for h in coll.search("odd metadata key", where={key: 1}, mode="lexical")] == ["odd-key"]
            assert [d.id for d in coll.documents(where={key: {"$gte": 1}})] == ["odd-key"]
        coll.delete("odd-key")


@pytest.mark.parametrize("value", ["9" * 30, "-9223372036854775809", "[" * 1000])
def test_where_value_that_reads_as_a_huge_or_deep_json_number_matches_nothing(coll_path, value):
    with Collection.open(coll_path) as coll:  # OverflowError / RecursionError from _as_number
        assert coll.search("lava", where={"topic": value}) == []


def test_a_collection_path_of_an_unknown_user_is_not_found(tmp_path):
    result = CliRunner().invoke(cli, ["info", "~no-such-user-here/notes"], env={"SEMSEARCH_HOME": str(tmp_path)})
    assert result.exit_code == 3 and "unexpected" not in result.stderr, result.stderr


def test_a_model_folder_of_an_unknown_user_is_not_found(tmp_path):
    env = {"SEMSEARCH_HOME": str(tmp_path)}  # pathlib's expanduser raised RuntimeError: exit 1, "unexpected"
    result = CliRunner().invoke(cli, ["embed", "--model", "~no-such-user-here/m", "hi"], env=env)
    assert result.exit_code == 3 and "no model folder at ~no-such-user-here/m" in result.stderr, result.stderr


def test_a_text_of_format_or_control_characters_alone_is_refused_and_replaces_nothing(coll_path):
    from semsearch.errors import InvalidInput

    with Collection.open(coll_path) as coll:
        count = coll.count()
        for text in ("\u200b", "\ufeff", "\0", "\x01\x1b", " \u2060\t"):  # were stored as no chunks at all
            with pytest.raises(InvalidInput, match="texts"):
                coll.add_texts([text], ids=["bread"])  # and 'bread' was gone, its id returned as added
        assert coll.count() == count and coll.search("knead the dough", k=1, mode="lexical")[0].id == "bread"


def test_a_text_the_tokenizer_reads_as_nothing_replaces_no_document(coll_path):
    with Collection.open(coll_path) as coll:
        coll.add_texts(["Bees make honey from the nectar of flowers."], ids=["bees"])
        try:
            coll.add_texts(["\u0301"], ids=["bees"])  # a combining accent alone: MiniLM strips accents
        except SemsearchError:
            pass
        found = [h.id for h in coll.search("honey nectar", k=1, mode="lexical")]
        coll.delete("bees")
        assert found == ["bees"]
