"""`semsearch check`: a whole collection passes every check; damage done to its real files
(FTS5 rows removed behind its back, another collection's or a truncated index file, a page
of the store overwritten, orphans, chunks out of order) is found, and --repair fixes what
can be rebuilt from the store and says what it cannot. Every case runs on a copy of one
small collection built once."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from semsearch.collection import CHECKS, Collection
from test_audit import read_only
from test_cli import assert_one_line_error, ok, run

DOCS = {
    "cats": "Cats purr, chase mice and sleep most of the day in a warm patch of sun.",
    "rain": "Heavy rain flooded the valley roads overnight; the river burst its banks near the mill.",
    "bread": "Knead the dough for ten minutes, let it rise twice, then bake the loaf until golden.",
    "comet": "The comet's tail glows because sunlight pushes dust and gas away from its icy nucleus.",
    "quokka": "A quokkaberry festival drew crowds to the island harbour every spring.",
    "marks": "?!? ... !!! -- ;;",  # no word for FTS5 to index: held by neither table, and whole
}


@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("check") / "base"
    with Collection.create(path, embedder=embedder, chunk_tokens=12, overlap=2) as coll:
        coll.add_texts(list(DOCS.values()), ids=list(DOCS))
    return path


@pytest.fixture(scope="module")
def other(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("check") / "other"
    with Collection.create(path, embedder=embedder) as coll:
        coll.add_texts(["a text of another collection"], ids=["x"])
    return path


@pytest.fixture
def coll(base, tmp_path) -> Path:
    """A copy of the base collection (closed: no -wal to carry)."""
    path = tmp_path / "c"
    shutil.copytree(base, path)
    return path


def check(path: Path, *flags: str, code: int = 0):
    """`semsearch check PATH --json` and its report; exit ``code``."""
    result = run("check", path, "--json", *flags)
    assert result.exit_code == code, (result.output, result.exception)
    return json.loads(result.stdout), result


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / "store.sqlite", isolation_level=None)


def lexical_ids(path: Path, word: str) -> list[str]:
    with Collection.open(path) as c:
        return [h.id for h in c.search(word, mode="lexical")]


def test_a_whole_collection_passes_every_check(coll):
    report, _ = check(coll)
    assert report["ok"] and report["problems"] == [] and report["repaired"] == []
    assert [c["check"] for c in report["checks"]] == list(CHECKS) and all(c["ok"] for c in report["checks"])
    assert report["documents"] == len(DOCS) and report["index"]["vectors"] == report["chunks"] > len(DOCS)
    assert report["index"]["sampled"] == report["chunks"]  # fewer than 1,000: every chunk found itself
    text = ok(run("check", coll)).stdout.splitlines()
    assert text[0].startswith("c (") and [line for line in text[1:] if not line.startswith("ok: ")] == []
    assert len(text) == 1 + len(CHECKS)
    shown = ok(run("check", "--help")).stdout
    assert "--repair" in shown and "It cannot fix a damaged store file" in " ".join(shown.split())


def test_an_approximate_index_passes(tmp_path, embedder):
    with Collection.create(tmp_path / "h", embedder=embedder, index="hnsw", chunk_tokens=12, overlap=2) as c:
        c.add_texts(list(DOCS.values()), ids=list(DOCS))
        report = c.check()
    assert report["ok"] and report["index"]["spec"].startswith("HNSW") and report["index"]["sampled"] > 10


def test_fts_rows_removed_behind_its_back_are_rebuilt(coll):
    db = raw(coll)
    doc_id = db.execute("SELECT id FROM documents WHERE key = 'quokka'").fetchone()[0]
    rows = db.execute("SELECT id, start, end, text FROM chunks WHERE doc_id = ? ORDER BY position", (doc_id,)).fetchall()
    from semsearch.store import document_text
    for chunk_id, _, _, text in rows:  # what FTS5 holds of them, deleted; the chunks stay
        db.execute("INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', ?, ?)", (chunk_id, text))
    db.execute("INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', ?, ?)",
               (doc_id, document_text(r[1:] for r in rows)))
    db.close()
    assert lexical_ids(coll, "quokkaberry") == []
    report, result = check(coll, code=1)
    assert {p["check"] for p in report["problems"]} == {"lexical"} and all(p["repairable"] for p in report["problems"])
    assert any("chunks_fts" in p["problem"] for p in report["problems"])
    assert any("documents_fts lacks 1 of the documents" in p["problem"] for p in report["problems"])
    assert_one_line_error(result, 1, "--repair` fixes")
    repaired = ok(run("check", coll, "--repair")).stdout
    assert "repaired: rebuilt the lexical indexes" in repaired and "problem:" not in repaired
    assert check(coll)[0]["ok"]
    assert lexical_ids(coll, "quokkaberry") == ["quokka"]


@pytest.mark.parametrize("damage", ["another collection's", "truncated", "newer than its store"])
def test_a_bad_index_file_is_said_and_rebuilt(coll, base, other, embedder, damage):
    file = coll / "index.faiss"
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "newer than its store":  # a store put back from an older copy, its index file left
        with Collection.open(coll, embedder=embedder) as c:
            c.add_texts(["a later note about lighthouses"], ids=["later"])
            c.rebuild_index()  # saved at the later generation
        shutil.copy(base / "store.sqlite", coll / "store.sqlite")
    else:
        shutil.copy(other / "index.faiss", file)
    before = file.read_bytes()
    report, _ = check(coll, code=1)
    [problem] = report["problems"]
    assert problem["check"] == "index" and problem["repairable"]
    assert {"truncated": "corrupt or truncated", "another collection's": "belongs to another collection"}.get(
        damage, damage) in problem["problem"]
    assert file.read_bytes() == before  # a check without --repair writes nothing
    report, _ = check(coll, "--repair")
    assert report["ok"] and report["repaired"] == ["rebuilt the vector index from the store and saved it"]
    with Collection.open(coll) as c:  # the saved file is this collection's, whole: read, not rebuilt
        assert c.check()["ok"]
        assert c.search(DOCS["comet"], k=1, mode="dense")[0].id == "comet"


def overwrite_page(coll: Path, of: str) -> None:
    """Garbage over the (root) page of table or index ``of``, the collection closed."""
    db = raw(coll)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (of,)).fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert root > 1 and not (coll / "store.sqlite-wal").exists()
    with open(coll / "store.sqlite", "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def test_a_damaged_page_is_not_repairable(coll):
    overwrite_page(coll, "chunks_gen")  # the page of an index: the store still opens
    before = (coll / "store.sqlite").read_bytes()
    for flags in ((), ("--repair",)):
        report, _ = check(coll, *flags, code=1)
        sqlite = [p for p in report["problems"] if p["check"] == "sqlite"]
        assert len(sqlite) == 1 and "integrity_check" in sqlite[0]["problem"] and report["repaired"] == []
        assert all(not p["repairable"] and "restore a backup" in p["fix"] for p in report["problems"])
    assert (coll / "store.sqlite").read_bytes() == before  # nothing written into a damaged file
    result = run("check", coll)
    line = assert_one_line_error(result, 1, "collection c has")
    assert "--repair" not in line  # it cannot help
    lines = result.stdout.splitlines()
    assert [x for x in lines if x.startswith("problem: ")][0] == "problem: integrity_check: database disk image is malformed"
    assert [x for x in lines if x.startswith("to fix: ")] == [f"to fix: {CHECKS['sqlite'][2]}"]


def test_orphans_are_deleted_and_chunks_out_of_order_are_not(coll):
    db = raw(coll)  # foreign keys off, as in a plain sqlite3 shell: what a bad hand edit does
    db.execute("DELETE FROM chunks WHERE doc_id = (SELECT id FROM documents WHERE key = 'bread')")
    db.execute("UPDATE chunks SET position = position + 5 WHERE doc_id = (SELECT id FROM documents WHERE key = 'rain')")
    db.execute("UPDATE chunks SET vector = zeroblob(length(vector)) WHERE id = (SELECT min(id) FROM chunks)")
    db.close()
    report, result = check(coll, code=1)
    # the deleted chunks' document is still in documents_fts, and in the index file (no write
    # replayed them): both out of step too
    assert sorted(p["check"] for p in report["problems"]) == ["documents", "index", "lexical", "positions", "vectors"]
    assert "--repair" not in assert_one_line_error(result, 1)  # not everything is repairable
    report, _ = check(coll, "--repair", code=1)
    assert report["repaired"] == ["deleted 1 document(s) without chunks and 0 chunk(s) without a document",
                                  "rebuilt the lexical indexes (chunks_fts, documents_fts) from the chunks",
                                  "rebuilt the vector index from the store and saved it"]
    assert sorted(p["check"] for p in report["problems"]) == ["positions", "vectors"]
    with Collection.open(coll) as c:
        assert sorted(d.id for d in c.documents()) == sorted(set(DOCS) - {"bread"})


def test_a_read_only_collection_is_checked_not_repaired(coll, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(read_only(probe, ["sh", "-c", f"! touch {probe}/x"]), capture_output=True).returncode:
        pytest.skip("cannot make a read-only folder here (root without a private mount namespace)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        for flags, code in (((), 0), (("--repair",), 77)):
            done = subprocess.run(read_only(coll, [sys.executable, "-m", "semsearch", "check", str(coll), *flags]),
                                  capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == code, done.stderr
            if code:
                assert done.stderr.strip().splitlines() == [
                    f"error: collection c is read-only here ({coll} cannot be written); it can be checked, not repaired"]
            else:
                assert "problem:" not in done.stdout and done.stdout.count("ok: ") == len(CHECKS)
    finally:
        for p in [probe, coll, *coll.iterdir()]:  # file modes (not root): put back for cleanup
            p.chmod(p.stat().st_mode | 0o200)


def test_a_store_too_damaged_to_open_fails_in_one_line(coll):
    overwrite_page(coll, "sqlite_autoindex_meta_1")  # how a store's settings are looked up
    line = assert_one_line_error(run("check", coll), 1, "is not a readable semsearch store")
    assert line.endswith("(database disk image is malformed); if the file is damaged, restore a backup or index again")


def test_an_index_whose_vectors_differ_from_the_store_is_found(coll):
    db = raw(coll)  # two chunks' vectors swapped in the store: same count, each still of length 1
    (a, va), (b, vb) = db.execute("SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id "
                                  "WHERE d.key IN ('cats', 'comet') AND c.position = 0 ORDER BY d.key").fetchall()
    db.executemany("UPDATE chunks SET vector = ? WHERE id = ?", [(vb, a), (va, b)])
    db.close()
    report, _ = check(coll, code=1)
    [problem] = report["problems"]
    assert problem["check"] == "index" and problem["problem"].startswith("2 of ")
    assert "sampled chunks are not found by their own vector" in problem["problem"]
    assert check(coll, "--repair")[0]["ok"]
