"""Issue 10's audit, kept as a table: bad input and faults against the CLI and the Python API.

Every row runs on its own copy of one small collection built once per session (copying a
folder is cheap, embedding is not). A failing row must exit with the taxonomy's code
(InvalidInput and click usage errors 2, NotFound 3, Conflict / busy 75, anything else 1)
and print exactly one line, ``error: ...``, with no traceback; unless the row says what
should change, the stored data must be the same afterwards: documents, chunks, metadata,
a lexical search and a dense search. Rows that need a real process (a held writer lock, a
FIFO, a read-only mount, the environment of the model cache) run ``python -m semsearch``;
the rest go through Click's CliRunner or call the library directly.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import SemsearchError

STORE, INDEX = "store.sqlite", "index.faiss"
CHUNK_TOKENS, OVERLAP = 32, 8
DOCS = {  # id -> (text, metadata); ids "1" and "2" are what delete("12") must not touch
    "1": ("Cats purr, chase mice and sleep most of the day in a warm patch of sun.",
          {"team": "pets", "flag": True}),
    "2": ("The rocket launch carried a weather satellite into orbit around the Earth.",
          {"team": "space", "flag": False}),
    "n1": ("Knead the dough, let it rise overnight, then bake the loaf in a hot oven.",
           {"team": "kitchen"}),
    "esc": ("Terminal colour codes \x1b[31mRED\x1b[0m and a title change \x1b]0;pwned\x07 "
            "hide inside this note about terminals \x1b[2J.", {"team": "terminals"}),
    "report": (" ".join(f"Quarter {q}: the harbour master counted boats, checked tide tables and "
                        f"logged the weather before the ferry left." for q in range(1, 5)),
               {"team": "harbour"}),
}
OTHER_DOCS = ["Volcanoes erupt lava and ash.", "Chess openings: the Sicilian defence.",
              "Bees make honey from nectar."]


# -- the session's collections ---------------------------------------------------------------
@pytest.fixture(scope="session")
def audit_root(tmp_path_factory, model_folder):
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="session")
def base(audit_root):
    """The collection every row copies (closed: the WAL is checkpointed into the store)."""
    path = audit_root / "base"
    with Collection.create(path, chunk_tokens=CHUNK_TOKENS, overlap=OVERLAP) as coll:
        coll.add_texts([t for t, _ in DOCS.values()], ids=list(DOCS), metadata=[m for _, m in DOCS.values()])
    return path


@pytest.fixture(scope="session")
def pristine(base):
    """What every row's copy must still show when the row is done (unless it says otherwise)."""
    return fingerprint(base)


@pytest.fixture(scope="session")
def other(audit_root):
    """A second collection, whose index file rows copy into the first."""
    path = audit_root / "other"
    with Collection.create(path, chunk_tokens=CHUNK_TOKENS, overlap=OVERLAP) as coll:
        coll.add_texts(OTHER_DOCS, ids=["v", "c", "b"])
    return path


@pytest.fixture(scope="session")
def can_mount_read_only(audit_root):
    """Root ignores file modes, so a read-only collection needs a read-only bind mount
    (in a private mount namespace); without that privilege those rows are skipped."""
    if os.geteuid() != 0:
        return True
    probe = audit_root / "mount-probe"
    probe.mkdir(exist_ok=True)
    cmd = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && ! touch {probe}/x"
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# -- what "unchanged" means ------------------------------------------------------------------
def stored_rows(path: Path) -> dict:
    db = sqlite3.connect(f"file:{path / STORE}?mode=ro", uri=True)
    try:
        docs = db.execute("SELECT key, metadata FROM documents ORDER BY key").fetchall()
        chunks = db.execute("SELECT d.key, c.position, c.start, c.end, c.text FROM chunks c "
                            "JOIN documents d ON d.id = c.doc_id ORDER BY d.key, c.position").fetchall()
        probe = db.execute("SELECT c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id "
                           "WHERE d.key = '1' ORDER BY c.position LIMIT 1").fetchone()
    finally:
        db.close()
    return {"documents": docs, "chunks": chunks, "probe": probe[0] if probe else None}


def fingerprint(path: Path) -> dict:
    """What a user can see of a collection: its rows, and one lexical and one dense search."""
    rows = stored_rows(path)
    with Collection.open(path) as coll:
        lexical = [(h.id, h.chunk) for h in coll.search("cats rocket harbour dough", k=5, mode="lexical")]
        vector = np.frombuffer(rows.pop("probe"), np.float32)[None]
        dense = [(h.id, h.chunk) for h in coll.search_vectors(vector, k=4)[0]]
        count = coll.count()
    return {**rows, "count": count, "lexical": lexical, "dense": dense}


def file_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- running a row ---------------------------------------------------------------------------
@dataclass
class Ctx:
    """Paths a row's arguments and hooks refer to: ``{C}`` is the row's collection."""
    C: Path
    T: Path  # the row's scratch folder
    base: Path
    other: Path
    model: Path  # the exported default model
    env: dict = field(default_factory=dict)  # extra environment for the command
    proc: subprocess.Popen | None = None  # a helper process to stop afterwards

    def fmt(self, arg) -> str:
        return str(arg).format(C=self.C, T=self.T)


@dataclass
class Case:
    id: str
    args: tuple = ()  # CLI arguments (str.format'ed with C and T)
    code: int = 2  # expected exit code (0: success)
    match: str | None = None  # a word the one error line must contain (case-insensitive)
    setup: Callable | None = None  # setup(ctx) before the before-snapshot
    api: Callable | None = None  # api(collection) instead of the CLI
    check: Callable | None = None  # check(ctx, result) for rows that should change something
    unchanged: str | None = "data"  # "data": fingerprint equal; "bytes": the folder's files equal; None
    proc: bool = False  # a real process instead of CliRunner
    readonly: bool = False  # run in a namespace where {C} is mounted read-only
    timeout: int = 90
    waits: bool = False  # waits out another process's writer lock (LOCK_WAIT, 10 s): see `waiting`


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    value: object = None  # what an api row returned
    error: BaseException | None = None  # what an api row raised


def run_cli(ctx: Ctx, case: Case) -> Result:
    args = [ctx.fmt(a) for a in case.args]
    if not case.proc and not case.readonly:
        result = CliRunner().invoke(cli, args, env=ctx.env or None)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"the command raised {result.exception!r}") from result.exception
        return Result(result.exit_code, result.stdout, result.stderr)
    command, env = cli_process(ctx, case)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=case.timeout,
                          stdin=subprocess.DEVNULL)
    return Result(done.returncode, done.stdout, done.stderr)


def cli_process(ctx: Ctx, case: Case) -> tuple[list[str], dict]:
    """The row's command line as a real process, and its environment."""
    env = {**os.environ, **ctx.env, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "semsearch", *[ctx.fmt(a) for a in case.args]]
    if case.readonly:
        command = read_only(ctx.C, command)
    return command, env


def read_only(folder: Path, command: list[str]) -> list[str]:
    """The command run with ``folder`` read-only: file modes for a normal user, a private
    read-only bind mount for root (whom file modes do not stop)."""
    if os.geteuid() != 0:
        for p in [folder, *folder.iterdir()]:
            p.chmod(p.stat().st_mode & ~0o222)
        return command
    quoted = " ".join(f"'{c}'" for c in command)
    return ["unshare", "-m", "sh", "-c",
            f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' && exec {quoted}"]


def run_api(ctx: Ctx, case: Case) -> Result:
    try:
        with Collection.open(ctx.C) as coll:
            value = case.api(coll)
    except SemsearchError as exc:
        return Result(exc.exit_code, "", f"error: {exc.one_line()}\n", error=exc)
    return Result(0, "", "", value=value)


def assert_outcome(case: Case, result: Result) -> None:
    shown = f"exit {result.code}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    assert result.code == case.code, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    if result.error is not None:  # the library: one line, our taxonomy (checked by the code above)
        assert "\n" not in str(result.error).strip(), repr(str(result.error))
    if case.code == 0:
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    if case.match:
        assert case.match.lower() in lines[0].lower(), shown


# -- setups and checks -----------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def jsonl(name: str, *lines: str):
    return lambda ctx: write(ctx.T / name, "".join(line + "\n" for line in lines))


def deep_json(depth: int = 100_000) -> str:
    return '{"text": "deep", "meta": ' + "[" * depth + "]" * depth + "}"


HOLDER = textwrap.dedent("""
    import sys
    from semsearch.collection import Collection
    with Collection.open(sys.argv[1]) as coll, coll.writer():
        print("locked", flush=True)
        sys.stdin.read()
""")


def hold_lock(ctx: Ctx) -> None:
    """Another process is writing: it holds the collection's writer lock until stopped."""
    ctx.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ctx.C)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert ctx.proc.stdout.readline().strip() == "locked"


def user_folder_with_collection(ctx: Ctx) -> None:
    """The issue's `index notes --name $PWD/notes`: the collection's files among the user's."""
    ctx.user = ctx.T / "notes"
    shutil.copytree(ctx.C, ctx.user)
    write(ctx.user / "todo.txt", "buy milk")
    write(ctx.user / "sub" / "plan.md", "# plan")
    ctx.user_files = {"todo.txt": b"buy milk", "sub/plan.md": b"# plan"}


def check_user_files_kept(ctx: Ctx, result: Result) -> None:
    kept = {str(p.relative_to(ctx.user)): p.read_bytes() for p in ctx.user.rglob("*") if p.is_file()}
    assert kept == ctx.user_files, sorted(kept)


def foreign_store(sqlite_file: bool):
    """A folder that has a ``store.sqlite`` semsearch did not make, beside the user's files."""
    def setup(ctx: Ctx) -> None:
        ctx.C = ctx.T / "mine"
        write(ctx.C / "diary.txt", "dear diary")
        if sqlite_file:
            db = sqlite3.connect(ctx.C / STORE)
            db.execute("CREATE TABLE photos (name TEXT)")
            db.commit()
            db.close()
        else:
            write(ctx.C / STORE, "my own notes, not a database")
    return setup


def replace_store(data: bytes):
    def setup(ctx: Ctx) -> None:
        (ctx.C / STORE).write_bytes(data)
    return setup


def model_copy(edit: Callable[[dict], None]):
    """An exported model folder (files hard-linked) whose manifest ``edit`` changed."""
    def setup(ctx: Ctx) -> None:
        folder = ctx.T / "model"
        folder.mkdir()
        for p in ctx.model.iterdir():
            if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".verified"):
                os.link(p, folder / p.name)
        manifest = json.loads((ctx.model / "manifest.json").read_text())
        edited = edit(manifest)
        manifest = manifest if edited is None else edited
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return setup


def drop_key(*keys):
    def edit(m):
        for key in keys[:-1]:
            m = m[key]
        del m[keys[-1]]
    return edit


def outside_file(m):
    m["variants"]["fp32"]["file"] = "../outside/model.onnx"


def setup_outside_model(ctx: Ctx) -> None:
    model_copy(outside_file)(ctx)
    outside = ctx.T / "outside"
    outside.mkdir()
    os.link(ctx.model / "model.onnx", outside / "model.onnx")


def check_nothing_written_outside(ctx: Ctx, result: Result) -> None:
    assert [p.name for p in (ctx.T / "outside").iterdir()] == ["model.onnx"]


def bit_rotten_model(ctx: Ctx) -> None:
    """The collection's model folder with model.onnx damaged in place: same size, same
    mtime, NaN float32s over a stretch of the weights."""
    target = ctx.T / "model"
    target.mkdir()
    for p in ctx.model.iterdir():
        if p.is_file() and p.name != "model.onnx":
            os.link(p, target / p.name)
    shutil.copy2(ctx.model / "model.onnx", target / "model.onnx")
    st = os.stat(ctx.model / "model.onnx")
    with open(target / "model.onnx", "r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"\xff" * 65536)
    os.utime(target / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns))
    db = sqlite3.connect(ctx.C / STORE)  # the collection is pinned to that folder
    pin = json.loads(db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()[0])
    db.execute("UPDATE meta SET value = ? WHERE key = 'model'", (json.dumps({**pin, "folder": str(target)}),))
    db.commit()
    db.close()


def foreign_index(ctx: Ctx) -> None:
    shutil.copy(ctx.other / INDEX, ctx.C / INDEX)


def older_store_backup(ctx: Ctx) -> None:
    """The store restored from a backup older than the index file beside it."""
    backup = ctx.T / "backup.sqlite"
    shutil.copy(ctx.C / STORE, backup)
    with Collection.open(ctx.C) as coll:
        coll.add_texts(["A note written after the backup was taken, about glaciers."], ids=["after"])
    for suffix in ("-wal", "-shm"):
        Path(f"{ctx.C / STORE}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, ctx.C / STORE)


def check_found_by_dense_search(key: str, query: str):
    def check(ctx: Ctx, result: Result) -> None:
        with Collection.open(ctx.C) as coll:
            hits = coll.search(query, k=1, mode="dense")
            assert hits and hits[0].id == key, hits
            assert coll.info()["index"]["vectors"] == coll.info()["chunks"]
    return check


def damage_index(how: str):
    def setup(ctx: Ctx) -> None:
        file = ctx.C / INDEX
        data = file.read_bytes()
        if how == "truncated":
            file.write_bytes(data[: len(data) // 2])
        elif how == "garbage":
            file.write_bytes(bytes(len(data)))
        else:
            file.unlink()
    return setup


def index_file_unwritable(ctx: Ctx) -> None:
    """index.faiss cannot be replaced (a folder stands in its place; root ignores modes)."""
    (ctx.C / INDEX).unlink()
    (ctx.C / INDEX).mkdir()


def check_added_once(key: str, word: str, total: int | None = None):
    def check(ctx: Ctx, result: Result) -> None:
        with Collection.open(ctx.C) as coll:
            hits = coll.search(word, k=10, mode="lexical")
            assert len(hits) == 1 and key in (None, hits[0].id), hits
            assert coll.count() == (total or len(DOCS) + 1)
    return check


def fifo(ctx: Ctx) -> None:
    os.mkfifo(ctx.T / "pipe.txt")  # a reader opening it would wait for a writer forever


def char_device(ctx: Ctx) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(ctx.T / "zero.txt", stat.S_IFCHR | 0o444, os.makedev(1, 5))  # /dev/zero: endless


def symlink_loop(ctx: Ctx) -> None:
    write(ctx.T / "docs" / "loop.txt", "Penguins huddle together through the antarctic winter.")
    (ctx.T / "docs" / "sub").mkdir()
    os.symlink("..", ctx.T / "docs" / "sub" / "up")  # docs/sub/up/sub/up/... never ends
    os.symlink("self", ctx.T / "docs" / "self")


def deep_json_file(ctx: Ctx) -> None:
    write(ctx.T / "docs" / "deep.json", deep_json())
    write(ctx.T / "docs" / "ok.txt", "Penguins huddle together through the antarctic winter.")


def check_no_escapes(ctx: Ctx, result: Result) -> None:
    assert "terminals" in result.stdout
    assert not any(c in result.stdout for c in "\x1b\x07\x9b"), repr(result.stdout)


def check_where_true(ctx: Ctx, result: Result) -> None:
    assert [h["id"] for h in json.loads(result.stdout)] == ["1"], result.stdout


def check_mode_like_store(ctx: Ctx, result: Result) -> None:
    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)
    assert mode(ctx.C / INDEX) == mode(ctx.C / STORE), (oct(mode(ctx.C / INDEX)), oct(mode(ctx.C / STORE)))


def store_mode_0644(ctx: Ctx) -> None:
    os.chmod(ctx.C / STORE, 0o644)
    os.chmod(ctx.C / INDEX, 0o600)


def beir_header_only_qrels(ctx: Ctx) -> None:
    folder = ctx.T / "beir"
    write(folder / "corpus.jsonl", json.dumps({"_id": "d1", "title": "", "text": "cats purr"}) + "\n")
    write(folder / "queries.jsonl", json.dumps({"_id": "q1", "text": "cats"}) + "\n")
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n")


def check_note_kept(ctx: Ctx, result: Result) -> None:
    assert (ctx.T / "note.txt").read_text() == "mine"


def check_not_created(ctx: Ctx, result: Result) -> None:
    assert not (ctx.T / "new" / STORE).exists()


def check_collection_gone(ctx: Ctx, result: Result) -> None:
    assert not (ctx.user / STORE).exists() and not (ctx.user / INDEX).exists()


def large_text_jsonl(ctx: Ctx) -> None:
    from semsearch.validation import MAX_DOCUMENT_CHARS
    write(ctx.T / "big.jsonl", json.dumps({"id": "big", "text": "word " * (MAX_DOCUMENT_CHARS // 5 + 1)}) + "\n")


def large_text_file(ctx: Ctx) -> None:
    from semsearch.validation import MAX_DOCUMENT_CHARS
    write(ctx.T / "docs" / "big.txt", "word " * (MAX_DOCUMENT_CHARS // 5 + 1))


def check_skipped(reason_word: str, added: int = 0):
    def check(ctx: Ctx, result: Result) -> None:
        assert f"added {added}," in result.stdout, result.stdout
        assert reason_word in result.stdout.lower(), result.stdout
    return check


def nan_vector(coll):
    v = np.full((1, coll.pinned["dim"]), np.nan, np.float32)
    return coll.search_vectors(v, k=3)


def big_text(coll):
    from semsearch.validation import MAX_DOCUMENT_CHARS
    return coll.add_texts(["word " * (MAX_DOCUMENT_CHARS // 5 + 1)], ids=["big"])


def unit(coll, dim=None):
    v = np.zeros((1, dim or coll.pinned["dim"]), np.float32)
    v[0, 0] = 1
    return v


C = "{C}"
SEARCH = ("search", C, "cats")
CASES = [
    # -- click usage errors: one `error:` line, exit 2 (issue item 14) ---------------------
    Case("usage-k-not-a-number", (*SEARCH, "-k", "abc"), match="-k"),
    Case("usage-k-fraction", (*SEARCH, "-k", "2.5"), match="-k"),
    Case("usage-k-without-value", (*SEARCH, "-k")),
    Case("usage-unknown-option", (*SEARCH, "--bogus"), match="--bogus"),
    Case("usage-unknown-command", ("frobnicate", C)),
    Case("usage-mode-not-a-choice", (*SEARCH, "--mode", "fuzzy"), match="fuzzy"),
    Case("usage-add-nothing", ("add", C)),
    Case("usage-add-id-per-text", ("add", C, "--id", "a", "--id", "b", "--text", "x")),
    Case("usage-index-without-name", ("index", "{T}")),
    Case("usage-rrf-k-zero", (*SEARCH, "--rrf-k", "0")),
    Case("usage-weights-one-number", (*SEARCH, "--weights", "1")),
    Case("usage-where-without-equals", (*SEARCH, "--where", "team")),
    Case("usage-meta-without-equals", ("add", C, "--text", "x", "--meta", "team")),
    Case("usage-search-without-query", ("search", C)),
    # -- invalid values (InvalidInput, 2) --------------------------------------------------
    Case("k-zero", (*SEARCH, "-k", "0"), match="k"),
    Case("k-negative", (*SEARCH, "-k", "-3"), match="k"),
    Case("k-a-billion", (*SEARCH, "-k", "1000000000"), match="k"),  # item 8: was OOM-killed
    Case("weights-nan", (*SEARCH, "--weights", "nan,1"), match="weights"),
    Case("weights-inf", (*SEARCH, "--weights", "1,inf"), match="weights"),
    Case("feedback-nan", (*SEARCH, "--feedback", "nan"), match="feedback"),
    Case("feedback-inf", (*SEARCH, "--feedback", "inf"), match="feedback"),
    Case("min-score-nan", (*SEARCH, "--min-score", "nan"), match="score"),
    Case("query-empty", ("search", C, ""), match="query"),
    Case("query-blank", ("search", C, "  \t "), match="query"),
    Case("query-over-the-limit", ("search", C, "lava " * 4_001), match="the limit is 20,000"),
    Case("where-unknown-key", (*SEARCH, "--where", "colour=red"), match="colour"),
    Case("add-blank-text-keeps-the-document", ("add", C, "--id", "n1", "--text", "   "), match="text"),  # item 3
    Case("add-empty-text", ("add", C, "--text", ""), match="text"),
    Case("jsonl-deeply-nested", ("add", C, "--jsonl", "{T}/deep.jsonl"), match="line 2",
         setup=jsonl("deep.jsonl", '{"text": "fine"}', deep_json())),  # item 9: was RecursionError
    Case("jsonl-invalid-json", ("add", C, "--jsonl", "{T}/bad.jsonl"), match="line 2",
         setup=jsonl("bad.jsonl", '{"text": "fine"}', '{"text": ')),
    Case("jsonl-not-an-object", ("add", C, "--jsonl", "{T}/list.jsonl"), match="line 1",
         setup=jsonl("list.jsonl", "[1, 2]")),
    Case("jsonl-without-text", ("add", C, "--jsonl", "{T}/notext.jsonl"), match="text",
         setup=jsonl("notext.jsonl", '{"id": "x", "title": 3}')),
    Case("jsonl-document-too-large", ("add", C, "--jsonl", "{T}/big.jsonl"), match="split",
         setup=large_text_jsonl, proc=True, timeout=60),  # item 14: one endless transaction
    Case("index-chunk-tokens-too-small", ("index", "{T}", "--name", "{T}/new", "--chunk-tokens", "2"),
         match="chunk", check=check_not_created),
    Case("index-overlap-too-large", ("index", "{T}", "--name", "{T}/new", "--overlap", "9999"),
         match="overlap", check=check_not_created),
    Case("index-unknown-index-type", ("index", "{T}", "--name", "{T}/new", "--index", "IVFnonsense"),
         check=check_not_created),
    Case("collection-name-dotdot", ("info", "..")),
    Case("collection-path-is-a-file", ("add", "{T}/note.txt", "--text", "x"),
         setup=lambda ctx: write(ctx.T / "note.txt", "mine"), check=check_note_kept),
    Case("k-just-over-the-limit", (*SEARCH, "-k", "10001"), match="k"),
    Case("add-blank-id", ("add", C, "--id", " ", "--text", "x"), match="id"),
    Case("jsonl-duplicate-ids", ("add", C, "--jsonl", "{T}/dup.jsonl"), match="unique",
         setup=jsonl("dup.jsonl", '{"id": "a", "text": "one"}', '{"id": "a", "text": "two"}')),
    Case("jsonl-id-too-long", ("add", C, "--jsonl", "{T}/long.jsonl"), match="id",
         setup=jsonl("long.jsonl", json.dumps({"id": "x" * 5000, "text": "one"}))),
    Case("jsonl-metadata-nested-too-deep", ("add", C, "--jsonl", "{T}/meta.jsonl"), match="deep",
         setup=jsonl("meta.jsonl", json.dumps({"text": "one", "m": json.loads("[" * 30 + "]" * 30)}))),
    Case("eval-header-only-qrels", ("eval", "{T}/beir"), match="qrels", setup=beir_header_only_qrels),
    # -- not found (3) -----------------------------------------------------------------------
    Case("search-no-such-collection", ("search", "{T}/nope", "cats"), code=3, match="nope"),
    Case("info-no-such-collection", ("info", "{T}/nope"), code=3, match="nope"),
    Case("rm-no-such-collection", ("rm", "{T}/nope", "--yes"), code=3, match="nope"),
    Case("index-missing-path", ("index", "{T}/not-there", "--name", C), code=3, match="not-there"),
    Case("delete-unknown-id", ("delete", C, "--id", "nope"), code=3, match="nope"),
    Case("delete-path-never-indexed", ("delete", C, "--path", "{T}"), code=3),
    Case("add-with-missing-model", ("add", C, "--text", "x", "--model", "/no/such/model"), code=3),
    Case("rm-folder-with-foreign-store-file", ("rm", C, "--yes"), code=3, setup=foreign_store(False),
         unchanged="bytes"),  # item 2
    Case("rm-folder-with-foreign-sqlite", ("rm", C, "--yes"), code=3, setup=foreign_store(True),
         unchanged="bytes"),  # item 2
    # -- busy or conflicting (75) ------------------------------------------------------------
    Case("add-while-another-writes", ("add", C, "--text", "x"), code=75, setup=hold_lock, proc=True,
         waits=True),
    Case("index-while-another-writes", ("index", "{T}", "--name", C), code=75, setup=hold_lock, proc=True,
         waits=True),
    Case("delete-while-another-writes", ("delete", C, "--id", "1"), code=75, setup=hold_lock, proc=True,
         waits=True),
    Case("rm-while-another-writes", ("rm", C, "--yes"), code=75, setup=hold_lock, proc=True),
    Case("index-existing-with-other-settings", ("index", "{T}", "--name", C, "--chunk-tokens", "40"),
         code=75, match="chunk"),
    Case("add-to-existing-with-another-model", ("add", C, "--text", "x", "--model", "some/other-model"),
         code=75, match="was built with"),  # was 1, where other settings are 75
    # -- not permitted (77) ---------------------------------------------------------------------
    Case("add-to-read-only-collection", ("add", C, "--text", "x"), code=77, match="read-only",
         readonly=True, unchanged="bytes"),
    # -- other failures (1) ------------------------------------------------------------------
    Case("store-is-garbage", SEARCH, code=1, setup=replace_store(b"\x13" * 8192), unchanged="bytes"),
    Case("store-is-empty", SEARCH, code=1, setup=replace_store(b""), unchanged="bytes"),
    Case("model-bit-rot", ("add", C, "--text", "a new note"), code=1, match="corrupt", setup=bit_rotten_model),  # item 7
    Case("manifest-is-a-list", ("embed", "hi", "--model", "{T}/model"), code=1, setup=model_copy(lambda m: [])),
    Case("manifest-without-max-length", ("embed", "hi", "--model", "{T}/model"), code=1,
         setup=model_copy(drop_key("max_length"))),
    Case("manifest-without-sha256", ("embed", "hi", "--model", "{T}/model"), code=1,
         setup=model_copy(drop_key("variants", "fp32", "sha256"))),
    Case("manifest-file-outside-folder", ("embed", "hi", "--model", "{T}/model"), code=1,
         setup=setup_outside_model, check=check_nothing_written_outside),  # item 12
    # -- faults that must not stop the user (0) ---------------------------------------------
    Case("search-while-another-writes", SEARCH, code=0, setup=hold_lock, proc=True),
    Case("search-read-only-collection", ("search", C, "cats", "--mode", "lexical"), code=0,
         readonly=True, unchanged="bytes"),  # item 11
    Case("index-file-from-another-collection", (*SEARCH, "--mode", "dense"), code=0,
         setup=foreign_index, proc=True),  # item 5
    Case("index-file-newer-than-restored-store", ("add", C, "--id", "late", "--text", "Lava flows from the volcano."),
         code=0, setup=older_store_backup, unchanged=None,
         check=check_found_by_dense_search("late", "volcanic eruption and lava")),  # item 5
    Case("index-file-truncated", (*SEARCH, "--mode", "dense"), code=0, setup=damage_index("truncated"), proc=True),
    Case("index-file-zeroed", (*SEARCH, "--mode", "dense"), code=0, setup=damage_index("garbage"), proc=True),
    Case("index-file-missing", (*SEARCH, "--mode", "dense"), code=0, setup=damage_index("missing"), proc=True),
    Case("index-file-unwritable-after-commit", ("add", C, "--id", "x1", "--text", "Otters juggle pebbles."),
         code=0, setup=index_file_unwritable, unchanged=None, proc=True,
         check=check_added_once("x1", "otters")),  # item 4
    Case("index-fifo-named-on-command-line", ("index", "{T}/pipe.txt", "--name", C), code=0, setup=fifo,
         proc=True, timeout=60, check=check_skipped("not a regular file")),  # item 10
    Case("index-device-named-on-command-line", ("index", "{T}/zero.txt", "--name", C), code=0,
         setup=char_device, proc=True, timeout=60, check=check_skipped("not a regular file")),  # item 10
    Case("index-folder-with-symlink-loop", ("index", "{T}/docs", "--name", C), code=0, setup=symlink_loop,
         unchanged=None, check=check_added_once(None, "penguins")),  # item 10
    Case("index-deeply-nested-json-file", ("index", "{T}/docs", "--name", C), code=0, setup=deep_json_file,
         unchanged=None, check=check_skipped("deep", added=1)),  # item 9
    Case("index-document-too-large", ("index", "{T}/docs", "--name", C), code=0, setup=large_text_file,
         proc=True, timeout=60, check=check_skipped("large")),  # item 14
    Case("search-prints-no-escape-sequences", ("search", C, "terminal colour codes", "-k", "1"), code=0,
         check=check_no_escapes),  # item 13
    Case("where-true-matches-json-true", (*SEARCH, "--where", "flag=true", "--json"), code=0,
         check=check_where_true),  # item 14
    Case("index-file-mode-follows-store", ("add", C, "--text", "Herons wade in shallow water."), code=0,
         setup=store_mode_0644, unchanged=None, check=check_mode_like_store),  # item 14
    Case("rm-keeps-the-users-files", ("rm", "{T}/notes", "--yes"), code=0, setup=user_folder_with_collection,
         unchanged=None, check=lambda ctx, r: (check_user_files_kept(ctx, r), check_collection_gone(ctx, r))),  # item 2
    # -- the library itself: the same validation for Python callers and the server -----------
    Case("api-k-a-string", api=lambda c: c.search("cats", k="5")),
    Case("api-k-a-fraction", api=lambda c: c.search("cats", k=2.5)),
    Case("api-k-a-billion", api=lambda c: c.search("cats", k=10**9)),
    Case("api-k-a-bool", api=lambda c: c.search("cats", k=True)),
    Case("api-mode-unknown", api=lambda c: c.search("cats", mode="fuzzy")),
    Case("api-docs-a-string", api=lambda c: c.search("cats", docs="no"), match="docs must be True or False"),
    Case("api-remove-missing-a-string", api=lambda c: c.add_files([c.path], remove_missing="no"),
         match="remove_missing"),  # "no" was truthy: the documents of vanished files were removed
    Case("api-weights-nan", api=lambda c: c.search("cats", weights=(math.nan, 1.0))),
    Case("api-where-value-a-list", api=lambda c: c.search("cats", where={"team": ["pets"]})),
    Case("api-query-none", api=lambda c: c.search(None)),
    Case("api-search-vectors-nan", api=nan_vector),
    Case("api-search-vectors-wrong-dim", api=lambda c: c.search_vectors(unit(c, 7), k=3)),
    Case("api-add-ids-not-one-per-text", api=lambda c: c.add_texts(["a", "b"], ids=["x"])),
    Case("api-add-duplicate-ids", api=lambda c: c.add_texts(["a", "b"], ids=["x", "x"])),
    Case("api-add-text-none", api=lambda c: c.add_texts([None])),
    Case("api-add-metadata-not-json", api=lambda c: c.add_texts(["a"], metadata=[{"when": datetime(2020, 1, 1)}])),
    Case("api-add-metadata-nan", api=lambda c: c.add_texts(["a"], metadata=[{"score": math.nan}])),
    Case("api-add-text-too-large", api=big_text),
    Case("api-add-vectors-nan", api=lambda c: c.add_vectors(["v"], unit(c) * np.nan, ["a text"])),
    Case("api-add-vectors-wrong-dim", api=lambda c: c.add_vectors(["v"], unit(c, 7), ["a text"])),
    Case("api-delete-a-bare-string-is-one-id", api=lambda c: c.delete("12"), code=0,
         check=lambda ctx, r: r.value == 0 or pytest.fail(f"delete('12') said {r.value}")),  # item 6
    Case("api-delete-none", api=lambda c: c.delete(None)),
    Case("api-where-empty-key", api=lambda c: c.search("cats", where={"": "pets"})),
    Case("api-add-files-missing-path", api=lambda c: c.add_files(["/no/such/folder"]), code=3),
    Case("api-open-no-such-collection", api=lambda c: Collection.open(c.path / "nope"), code=3),
    Case("api-create-existing", api=lambda c: Collection.create(c.path), code=75),
]


def row_ctx(folder: Path, base, other, model_folder) -> Ctx:
    ctx = Ctx(C=folder / "c", T=folder / "t", base=base, other=other, model=Path(model_folder))
    shutil.copytree(base, ctx.C)
    ctx.T.mkdir()
    return ctx


@pytest.fixture(scope="module")
def waiting(base, other, model_folder, tmp_path_factory):
    """The rows that wait out another process's writer lock, all started at once (set up
    each in its own folder, as test_audit does): their 10 s waits overlap instead of adding
    up. {id: (ctx, process)}; test_audit checks each as its own row."""
    started = {}
    try:
        for case in CASES:
            if case.waits:
                assert case.setup and case.unchanged != "bytes"  # set up here, checked by the row
                ctx = row_ctx(tmp_path_factory.mktemp(case.id), base, other, model_folder)
                started[case.id] = (ctx, None)
                case.setup(ctx)
                command, env = cli_process(ctx, case)
                started[case.id] = (ctx, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                          text=True, env=env, stdin=subprocess.DEVNULL))
        yield started
    finally:
        for ctx, proc in started.values():
            if proc is not None:
                proc.kill()
                proc.wait()
            if ctx.proc is not None and ctx.proc.poll() is None:
                ctx.proc.kill()
                ctx.proc.wait()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_audit(case: Case, base, pristine, other, model_folder, can_mount_read_only, tmp_path, request):
    if case.readonly and not can_mount_read_only:
        pytest.skip("cannot make a read-only folder here")
    if case.waits:
        ctx, proc = request.getfixturevalue("waiting")[case.id]
    else:
        ctx = row_ctx(tmp_path, base, other, model_folder)
    try:
        if case.setup and not case.waits:
            case.setup(ctx)
        before = pristine if case.unchanged == "data" else snapshot(ctx.C, case.unchanged)
        if case.waits:
            stdout, stderr = proc.communicate(timeout=case.timeout)
            result = Result(proc.returncode, stdout, stderr)
        else:
            result = run_api(ctx, case) if case.api else run_cli(ctx, case)
        assert_outcome(case, result)
        if case.check:
            case.check(ctx, result)
        assert snapshot(ctx.C, case.unchanged) == before
    finally:
        if ctx.proc is not None:
            ctx.proc.stdin.close()
            ctx.proc.wait(timeout=30)


def snapshot(folder: Path, kind: str | None):
    if kind == "data":
        return fingerprint(folder)
    if kind == "bytes":
        return file_bytes(folder)
    return None


def test_the_table_keeps_its_size():
    """The audit only grows: at least 40 rows of bad input and faults (issue 10)."""
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
