"""A collection made on-disk at creation (index="ondisk"): no in-memory index before its
first `semsearch build`, an exact scan of the store that equals a flat collection's search.
The build itself (Ray) is tested in test_distributed.py."""
import logging
import random

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import INDEX_FILE, Collection
from semsearch.distributed import ondisk
from semsearch.errors import CollectionExists, InvalidInput

WORDS = ("wing flow pressure boundary layer heat transfer shock wave laminar turbulent "
         "panel buckling vortex drag stall nozzle jet mixing rocket combustion").split()
QUERIES = ["shock wave boundary layer", "panel buckling under heat", "jet nozzle mixing",
           "vortex drag at stall", "laminar flow transition"]


@pytest.fixture(scope="module")
def corpus(embedder):
    """150 short texts, their real vectors and a metadata field to filter on."""
    rng = random.Random(3)
    texts = [" ".join(rng.choice(WORDS) for _ in range(9)) + f" note {i}" for i in range(150)]
    ids = [f"d{i}" for i in range(len(texts))]
    meta = [{"team": "aero" if i % 3 else "prop"} for i in range(len(texts))]
    return ids, embedder.embed(texts), texts, meta


def pair(corpus, embedder, tmp_path):
    """The same documents in a flat (exact, in-memory) and an on-disk collection."""
    made = []
    for index in ("flat", "ondisk"):
        coll = Collection.create(tmp_path / index, index=index, embedder=embedder)
        coll.add_vectors(*corpus)
        made.append(coll)
    return made


def ranked(coll, **kw):
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in coll.search(QUERIES, **kw)]


def test_ondisk_search_equals_flat_with_filters_and_deletes(corpus, embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(ondisk, "SCAN_ROWS", 16)  # many batches: the running top-k merges them
    flat, disk = pair(corpus, embedder, tmp_path)
    with flat, disk:
        for kw in ({"mode": "dense", "k": 10}, {"mode": "hybrid", "k": 10},
                   {"mode": "dense", "k": 7, "where": {"team": "prop"}},
                   {"mode": "dense", "k": 200}):  # k past the collection's size
            assert ranked(disk, **kw) == ranked(flat, **kw)
        assert all(h.metadata["team"] == "prop" for h in disk.search(QUERIES[0], k=20, where={"team": "prop"}))
        gone = [h.id for h in flat.search(QUERIES[0], k=5, mode="dense")]
        for coll in (flat, disk):
            coll.delete(gone)
        assert ranked(disk, mode="dense", k=10) == ranked(flat, mode="dense", k=10)
        assert not set(gone) & {h.id for h in disk.search(QUERIES[0], k=20, mode="dense")}
        q = embedder.embed(QUERIES[:2], kind="query")
        assert [[h.id for h in r] for r in disk.search_vectors(q, k=5)] == \
               [[h.id for h in r] for r in flat.search_vectors(q, k=5)]


def test_ondisk_collection_writes_no_index_file_and_says_it_is_not_built(corpus, embedder, tmp_path):
    with Collection.create(tmp_path / "c", index="ondisk", embedder=embedder) as coll:
        coll.add_vectors(*corpus)
        coll.delete(["d0"])
        info = coll.info()["index"]
        assert info["kind"] == "ondisk" and info["requested"] == "ondisk" and info["built"] is False
        assert info["vectors"] == info["waiting"] == 149 and info["spec"] == "exact scan"
        assert not (coll.path / INDEX_FILE).exists()
        with pytest.raises(InvalidInput, match="semsearch build"):
            coll.rebuild_index()
    with Collection.open(tmp_path / "c", embedder=embedder) as again:  # reopened: still a scan, same hits
        assert again.search(corpus[2][7], k=1, mode="dense")[0].id == "d7"
        assert not (again.path / INDEX_FILE).exists()


def test_large_unbuilt_collection_is_reported_once_at_open(corpus, embedder, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ondisk, "SCAN_WARN", 100)
    with Collection.create(tmp_path / "c", index="ondisk", embedder=embedder) as coll:
        coll.add_vectors(*corpus)
    with caplog.at_level(logging.WARNING, logger="semsearch"), \
            Collection.open(tmp_path / "c", embedder=embedder) as coll:
        for q in QUERIES:
            coll.search(q, k=3)
    said = [r.getMessage() for r in caplog.records if "semsearch build" in r.getMessage()]
    assert len(said) == 1 and "150 vectors" in said[0]


def test_ondisk_is_chosen_at_creation_and_checked_like_other_index_types(embedder, tmp_path):
    with Collection.create(tmp_path / "m", embedder=embedder) as coll:
        with pytest.raises(InvalidInput, match="at creation"):
            coll.rebuild_index("ondisk")
    with pytest.raises(CollectionExists, match="index=auto, not ondisk"):
        Collection.open_or_create(tmp_path / "m", index="ondisk", embedder=embedder)
    with pytest.raises(InvalidInput, match="invalid index spec 'on-disk'"):
        Collection.create(tmp_path / "x", index="on-disk", embedder=embedder)
    assert not (tmp_path / "x" / "store.sqlite").exists()


def test_cli_index_ondisk_creates_an_unbuilt_collection(home, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, q in enumerate(QUERIES):
        (docs / f"{i}.txt").write_text(f"a report on {q}, number {i}")
    runner = CliRunner()
    assert "ondisk" in runner.invoke(cli, ["index", "--help"]).output
    result = runner.invoke(cli, ["index", str(docs), "--name", "big", "--index", "ondisk"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, ["info", "big"])
    assert "on disk, not built: 5 vectors scanned exactly" in shown.output
    hit = runner.invoke(cli, ["search", "big", "jet nozzle mixing", "-k", "1", "--json"])
    assert hit.exit_code == 0 and "2.txt" in hit.output, hit.output
    assert not (home / "big" / INDEX_FILE).exists()
    bad = runner.invoke(cli, ["index", str(docs), "--name", "bad", "--index", "ondsk"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "ondsk" in bad.output


def test_exact_search_over_batches_equals_one_flat_search():
    import faiss
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    ids = np.arange(500, dtype=np.int64) * 3 + 1
    q = rng.standard_normal((4, 16)).astype(np.float32)
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(16))
    flat.add_with_ids(x, ids)
    batches = [(ids[a:a + 64], x[a:a + 64]) for a in range(0, 500, 64)]
    D, I = ondisk.exact_search(batches, q, 10)
    D_true, I_true = flat.search(q, 10)
    assert I.tolist() == I_true.tolist() and np.allclose(D, D_true)
    allowed = np.sort(ids[::50])  # 10 ids: asking for 12 pads with -1 / -inf
    D, I = ondisk.exact_search(batches, q, 12, allowed)
    assert set(I[0, :10].tolist()) == set(allowed.tolist()) and (I[:, 10:] == -1).all()
    assert np.isneginf(D[:, 10:]).all()
