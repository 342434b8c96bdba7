"""Scale-out: the on-disk IVF build and the Ray Data ingest, on a real local Ray cluster."""
from pathlib import Path

import faiss
import numpy as np
import pytest

from semsearch.distributed import ondisk


def clustered(n, dim, seed=0, centers=40):
    """Unit vectors around a few random centres: IVF-friendly, like real embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shards(folder, ids, vectors, parts=3):
    bounds = np.linspace(0, len(ids), parts + 1).astype(int)
    return [ondisk.write_shard(folder / f"part-{i}.parquet", ids[a:b], vectors[a:b],
                               text=[f"chunk {j}" for j in ids[a:b]])
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def lists_of(ivf):
    inv = faiss.downcast_InvertedLists(ivf.invlists) if type(ivf.invlists) is faiss.InvertedLists else ivf.invlists
    out = []
    for l in range(ivf.nlist):
        n = inv.list_size(l)
        ids = faiss.rev_swig_ptr(inv.get_ids(l), n).copy() if n else np.zeros(0, np.int64)
        codes = faiss.rev_swig_ptr(inv.get_codes(l), n * inv.code_size).copy() if n else np.zeros(0, np.uint8)
        out.append((ids, codes))
    return out


def test_shard_build_merged_on_disk_equals_in_memory_ivf(tmp_path, ray_local):
    x = clustered(3000, 32)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11  # sparse ids, as store chunk ids are
    shards = write_shards(tmp_path, ids, x)
    folder = ondisk.build(shards, tmp_path / "ondisk-1", spec="IVF16,Flat", use_ray=True, part_rows=700)
    mm = ondisk.MmapIndex.open(folder)
    assert type(faiss.extract_index_ivf(mm._index).invlists) is not faiss.ArrayInvertedLists
    assert isinstance(faiss.downcast_InvertedLists(mm._ivf.invlists), faiss.OnDiskInvertedLists)

    # the same trained quantizer, every vector added in memory in shard order
    centroids = mm._ivf.quantizer.reconstruct_n(0, mm._ivf.nlist)
    quantizer = faiss.IndexFlatIP(32)
    quantizer.add(centroids)
    mem = faiss.IndexIVFFlat(quantizer, 32, mm._ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    mem.add_with_ids(x, ids)

    assert mm.ntotal == mem.ntotal == 3000
    for (a_ids, a_codes), (b_ids, b_codes) in zip(lists_of(mm._ivf), lists_of(mem)):
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_codes, b_codes)
    q = clustered(50, 32, seed=1)
    for nprobe in (1, 4, 16):
        mem.nprobe = nprobe
        D_mem, I_mem = mem.search(q, 10)
        D_disk, I_disk = mm.search(q, 10, nprobe=nprobe)
        assert np.array_equal(I_mem, I_disk) and np.allclose(D_mem, D_disk)
    assert mm.meta["recall_at_10"] >= 0.95 and mm.meta["max_id"] == int(ids.max())


def test_recall_of_a_build_smaller_than_k_counts_only_real_neighbours(tmp_path):
    """A 6-vector build said "recall@10 0.700" for an IVF1 that searches everything: the
    -1s padding both lists to k were counted as a neighbour found, and 10 as the number there are."""
    x = clustered(6, 16, seed=4)
    folder = ondisk.build(write_shards(tmp_path, np.arange(6, dtype=np.int64), x), tmp_path / "ondisk-1",
                          spec="IVF1,Flat", use_ray=False)
    assert ondisk.MmapIndex.open(folder).meta["recall_at_10"] == 1.0


def test_mmap_index_reopened_keeps_deletes_and_adds(tmp_path):
    x = clustered(2000, 16, seed=2)
    ids = np.arange(2000, dtype=np.int64)
    folder = ondisk.build(write_shards(tmp_path, ids, x, parts=2), tmp_path / "ondisk-1",
                          spec="IVF8,Flat", use_ray=False)
    mm = ondisk.MmapIndex.open(folder)
    exact = faiss.IndexFlatIP(16)
    exact.add(x)
    _, top = exact.search(x[:5], 1)
    assert [int(i) for i in mm.search(x[:5], 1, nprobe=8)[1][:, 0]] == top[:, 0].tolist()

    gone = np.arange(5, dtype=np.int64)          # deleted after the build: tombstones
    new = clustered(3, 16, seed=3)               # added after the build: the delta
    mm.remove(gone)
    mm.add(np.array([5000, 5001, 5002]), new)
    mm.save_changes(tmp_path / "changes.npz", generation=7)

    again = ondisk.MmapIndex.open(folder)
    assert again.load_changes(tmp_path / "changes.npz") == 7
    assert again.ntotal == 2000 - 5 + 3
    D, I = again.search(np.vstack([x[:5], new]), 3, nprobe=8)
    assert not np.isin(I, gone).any()
    assert I[5:, 0].tolist() == [5000, 5001, 5002]
    D, I = again.search(x[:5], 3, allowed_ids=np.array([1, 2, 100, 5001]), nprobe=8)
    assert set(I.ravel()) - {-1} <= {100, 5001}
    assert again.tombstone_ratio == pytest.approx(5 / 2000)


# ------------------------------------------------------------------------------ index --ray
WORDS = ("wing flow pressure boundary layer heat transfer shock wave laminar turbulent "
         "supersonic nozzle compressor blade vortex drag lift stall panel buckling").split()


def write_corpus(folder, n_files=12, words=60, seed=0, grow=37):
    """Text files of varied length (``words`` + ``grow`` x i), records, and the bad input
    the loaders skip."""
    import json
    import random
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(words + grow * i)))
    (folder / "notes.md").write_text("# Notes\n\nThe boundary layer separates near the trailing edge.")
    (folder / "records.jsonl").write_text(
        json.dumps({"id": "r1", "text": "shock wave in a nozzle", "team": "aero"}) + "\n"
        + json.dumps({"id": "r2", "text": "panel buckling under load", "team": "structures"}) + "\n"
        + "{not json\n")
    (folder / "junk.txt").write_bytes(bytes(range(256)) * 64)        # binary: skipped
    (folder / "stray.txt").write_bytes("café naïve wing".encode() + b" \xff")  # UTF-8, one undecodable byte
    (folder / "empty.txt").write_text("")                              # no text
    (folder / "table.xyz").write_text("unsupported")
    return folder


def contents(coll):
    """Every document and chunk with its vector, keyed by document key."""
    db = coll.store.db
    docs = {k: (s, h, m) for k, s, h, m in db.execute("SELECT key, source, content_hash, metadata FROM documents")}
    chunks = {}
    for key, pos, start, end, text, vec in db.execute(
            "SELECT d.key, c.position, c.start, c.end, c.text, c.vector FROM chunks c "
            "JOIN documents d ON d.id = c.doc_id ORDER BY d.key, c.position"):
        chunks.setdefault(key, []).append((pos, start, end, text, np.frombuffer(vec, np.float32)))
    return docs, chunks


def assert_same_collection(a, b):
    docs_a, chunks_a = contents(a)
    docs_b, chunks_b = contents(b)
    assert docs_a == docs_b
    assert chunks_a.keys() == chunks_b.keys()
    for key in chunks_a:
        assert [c[:4] for c in chunks_a[key]] == [c[:4] for c in chunks_b[key]]
        for x, y in zip(chunks_a[key], chunks_b[key]):
            assert np.abs(x[4] - y[4]).max() <= 1e-5
    for q in ("shock wave nozzle", "trailing edge separation", "panel buckling"):
        assert [h.id for h in a.search(q, k=5)] == [h.id for h in b.search(q, k=5)]


def same_report(r1, r2):
    keep = ("added", "updated", "unchanged", "removed", "chunks", "replaced_chars")
    return ({k: getattr(r1, k) for k in keep}, sorted(r1.skipped)) == \
        ({k: getattr(r2, k) for k in keep}, sorted(r2.skipped))


def test_index_on_ray_equals_single_process_then_incremental(tmp_path, home, ray_local):
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    corpus = write_corpus(tmp_path / "corpus", n_files=8)  # 60 to 319 words: 1 or 2 chunks each
    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local, r_ray = local.add_files([corpus]), index_paths(onray, [corpus])
        assert same_report(r_local, r_ray), (r_local, r_ray)
        assert {reason for _, reason in r_ray.skipped} >= {"binary file", "invalid JSON", "unsupported type .xyz"}
        assert r_ray.replaced_chars > 0
        assert_same_collection(local, onray)

        (corpus / "doc03.txt").write_text("a changed document about vortex drag")
        (corpus / "doc05.txt").unlink()
        (corpus / "new.txt").write_text("a new document about compressor stall")
        r_local, r_ray = local.add_files([corpus]), index_paths(onray, [corpus])
        assert (r_ray.added, r_ray.updated, r_ray.removed) == (1, 1, 1)
        assert r_ray.unchanged == r_local.unchanged > 0 and same_report(r_local, r_ray)
        assert_same_collection(local, onray)


def write_dump(path, n=300, blank=75, dups=(10, 280), change=None, drop=None):
    """One JSONL of short records, a third with no id (keyed by line number), a blank line and
    a bad one at ``blank``, the id "dup" twice; ``change``/``drop``: that line's record
    edited, or blanked (line numbers stay)."""
    import json
    lines = []
    for i in range(1, n + 1):
        rec = {"text": f"record {i} on {WORDS[i % len(WORDS)]} {WORDS[i * 7 % len(WORDS)]}"}
        if i in dups:
            rec["id"] = "dup"
        elif i % 3:
            rec["id"] = f"r{i}"
        if i == change:
            rec["text"] += " and vortex drag"
        lines.append("" if i in (blank, drop) else "{not json" if i == blank + 1 else json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_parts_of_a_jsonl_file_load_as_the_whole_file(tmp_path):
    """What each `index --ray` call reads of a big JSONL file: its lines decoded in the whole
    file's encoding (sniffed once, over all of it) and numbered from the file's start."""
    from semsearch.loaders import Skipped, jsonl_parts, load_file

    def loaded(path, parts):
        out = []
        for part in parts:
            for d in load_file(str(path), part):
                out.append((d.source, d.reason) if isinstance(d, Skipped) else
                           (d.key, d.where, d.content_hash, "".join(d.segments()), d.replaced_chars))
        return out

    lines = [f'{{"text": "caf\u00e9 record {i} on {WORDS[i % len(WORDS)]}"}}' for i in range(60)]
    lines[20] = '\ufeff{"text": "joined by cat: a byte-order mark mid-file"}'
    lines[30] = '\ufeff\ufeff{"text": "two of them: not JSON, as for the whole file"}'
    lines[40] = '{"text": "a stray byte \udcff here"}'
    text = "\ufeff" + "\r\n".join(lines[:10]) + "\n" + "\n".join(lines[10:]) + "\n"
    cases = {"utf8.jsonl": text.encode("utf-8", "surrogateescape").replace("\udcff".encode("utf-8", "surrogatepass"), b"\xff"),
             "cp1252.jsonl": "\n".join(lines[:20]).encode("cp1252") + b"\n",
             "utf16.jsonl": text.replace("\udcff", "?").encode("utf-16")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        for part_bytes in (1, 97, 250):
            parts = jsonl_parts(str(tmp_path / name), part_bytes)
            assert (len(parts) > 2) == (name != "utf16.jsonl")  # UTF-16 stays whole: its newlines are 2 bytes
            if parts:
                assert [p.line for p in parts][:2] == [1, 2 if part_bytes == 1 else parts[1].line]
                assert loaded(tmp_path / name, parts) == loaded(tmp_path / name, [None]), (name, part_bytes)
    assert {p.encoding for p in jsonl_parts(str(tmp_path / "cp1252.jsonl"), 100)} == {"cp1252"}
    assert any(r[-1] for r in loaded(tmp_path / "utf8.jsonl", [None])[40:41])  # the stray byte is counted


def test_one_big_jsonl_goes_out_in_parts_over_the_actors_as_index_loads_it(tmp_path, home, ray_local, caplog):
    """`index --ray` handed whole files to the actors: a corpus that is one big JSONL file
    (a BEIR corpus.jsonl, a dump) ran on one actor. It now goes out in line-aligned parts:
    same keys (ids, line numbers), chunks, vectors, skips (their lines) and report as
    `index`, a duplicate id across parts included; a re-run embeds only what changed."""
    import logging

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.loaders import jsonl_parts
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    dump = write_dump(corpus / "dump.jsonl")
    offsets = [0]
    for line in dump.read_bytes().splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    part_bytes = offsets[75 - 1]  # the first cut falls just before the blank line (75)
    (corpus / "blank.jsonl").write_text("\u3000\n" * (part_bytes // 2))  # lines Python finds blank: no records
    (corpus / "note.txt").write_text("the boundary layer separates near the trailing edge")
    parts = jsonl_parts(str(dump), part_bytes)
    assert len(parts) >= 3 and parts[1].line == 75 and len(jsonl_parts(str(corpus / "blank.jsonl"), part_bytes)) == 2
    assert [p.line for p in parts if p.line <= 10][-1] != [p.line for p in parts if p.line <= 280][-1]  # dups apart

    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local = local.add_files([corpus])
        with caplog.at_level(logging.DEBUG, logger="semsearch"):
            r_ray = index_paths(onray, [corpus], actors=2, part_bytes=part_bytes)
        # Ray's own account: a call for each part (blank.jsonl's 2, dump.jsonl's) and one for note.txt
        assert f"MapBatches(PrepareFiles): {2 + len(parts) + 1} tasks executed" in caplog.text
        assert same_report(r_local, r_ray), (r_local, r_ray)
        assert {(f"{dump}:76", "invalid JSON"), (f"{dump}:280", "duplicate id dup"),
                (str(corpus / "blank.jsonl"), "no records")} <= set(r_ray.skipped)
        assert len(r_ray.skipped) == 3 and r_ray.added == 300 - 3 + 1
        assert {f"{dump}#3", f"{dump}#78", f"{dump}#r77", f"{dump}#dup"} <= set(contents(onray)[0])
        assert_same_collection(local, onray)

        write_dump(dump, change=200, drop=199)  # one record edited, one gone: line numbers stay
        r_local = local.add_files([corpus])
        r_ray = index_paths(onray, [corpus], actors=2, part_bytes=part_bytes)
        assert (r_ray.updated, r_ray.removed, r_ray.added, r_ray.chunks) == (1, 1, 0, 1)  # only it embedded
        assert r_ray.unchanged == 300 - 3 + 1 - 2 and same_report(r_local, r_ray), (r_local, r_ray)
        assert_same_collection(local, onray)


def test_cli_index_ray_reports_like_index(tmp_path, home, ray_local, caplog):
    """...and starts no actor that has no call to make: 3 files are one call, on one actor
    with the CPUs' threads (two actors, each loading the model, drew Ray's warning that one
    would idle)."""
    import logging

    from click.testing import CliRunner
    from semsearch.cli import cli
    corpus = write_corpus(tmp_path / "corpus", n_files=3)
    plain = CliRunner().invoke(cli, ["index", str(corpus), "--name", "plain"])
    onray = CliRunner().invoke(cli, ["index", str(corpus), "--name", "onray", "--ray"])
    assert plain.exit_code == 0 and onray.exit_code == 0, onray.output
    strip = lambda out: [l.split(";")[0].replace("plain", "X").replace("onray", "X") for l in out.splitlines()]
    assert strip(plain.output) == strip(onray.output)
    missing = CliRunner().invoke(cli, ["index", str(tmp_path / "nope"), "--name", "x", "--ray"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        (few / f"note{i}.txt").write_text(f"note {i} on the wing's trailing edge")
    with caplog.at_level(logging.INFO, logger="semsearch"):
        one_call = CliRunner().invoke(cli, ["index", str(few), "--name", "few", "--ray"])
    assert one_call.exit_code == 0 and "ray: 1 actor(s), 2 CPU(s) each" in caplog.messages, caplog.messages


def test_a_model_that_fails_in_the_actors_stops_the_job_with_the_local_paths_error(tmp_path, home, ray_local,
                                                                                   model_folder):
    """A semsearch error inside an actor reaches the caller as itself (one line), not
    wrapped in Ray's task traceback."""
    import shutil

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.errors import ModelError
    model = shutil.copytree(model_folder, tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus", n_files=3)
    Collection.create("damaged", model=str(model)).close()
    with open(model / "model.onnx", "r+b") as f:  # bit rot after the collection was made
        f.seek((model / "model.onnx").stat().st_size // 2)
        f.write(b"\xff" * 65536)
    with Collection.open("damaged") as coll:
        with pytest.raises(ModelError) as local:
            coll.add_files([corpus])
        with pytest.raises(ModelError) as onray:
            index_paths(coll, [corpus])
    assert str(onray.value) == str(local.value) and "does not match its manifest" in str(onray.value)


def _map_workers():
    import psutil
    return [p for p in psutil.process_iter(["cmdline"])
            if any("PrepareFiles" in part for part in (p.info["cmdline"] or []))]


def test_worker_killed_mid_job_every_document_once(tmp_path, home, ray_local):
    import signal

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    # calls of 4 files (~1,200 words) on one actor, 5 or more: the actor is busy when it is killed
    corpus = write_corpus(tmp_path / "corpus", n_files=16, words=300, grow=0)
    killed, later = [], set()
    earlier = {p.pid for p in _map_workers()}  # idle actors of earlier tests' jobs, not yet reaped

    def kill_a_worker(key):
        workers = [p for p in _map_workers() if p.pid not in earlier]
        if killed:  # the actors that did the rest of the job
            later.update(p.pid for p in workers)
            return
        assert len(workers) == 1, "expected the one Ray Data actor process of this job"
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        killed.append(workers[0].pid)

    with Collection.create("killed") as coll:
        report = index_paths(coll, [corpus], actors=1, on_commit=kill_a_worker)
        assert killed and later and killed[0] not in later  # Ray restarted the actor mid-job
        keys = [k for (k,) in coll.store.db.execute("SELECT key FROM documents")]
        assert len(keys) == len(set(keys)) == report.added
        positions = coll.store.db.execute(
            "SELECT count(*), count(DISTINCT doc_id || ':' || position) FROM chunks").fetchone()
        assert positions[0] == positions[1] == report.chunks
    with Collection.create("reference") as ref, Collection.open("killed") as coll:
        ref.add_files([corpus])
        assert_same_collection(ref, coll)


def test_driver_killed_rerun_embeds_only_what_was_not_committed(tmp_path, home, ray_local):
    import os
    import sqlite3
    import subprocess
    import sys
    import time

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    # 10+ calls of 4 files (~800 words): commits keep coming (the corpus is embedded 3 times: no more)
    corpus = write_corpus(tmp_path / "corpus", n_files=40, words=200, grow=0)
    address = ray_local.get_runtime_context().gcs_address
    store = home / "crash" / "store.sqlite"

    def count():
        if store.is_file():
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                try:
                    return db.execute("SELECT count(*) FROM documents").fetchone()[0]
                except sqlite3.OperationalError:  # schema not there yet
                    pass
        return 0

    def driver_stopped_after_a_commit(stop):
        driver = subprocess.Popen([sys.executable, "-m", "semsearch", "index", str(corpus), "--name", "crash",
                                   "--ray", address], env=dict(os.environ), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        start, deadline = count(), time.monotonic() + 180
        while count() == start and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stop(driver)
        err = driver.communicate()[1].decode()
        assert count() > start, f"the driver committed nothing before it ended: {err[-500:]}"
        return driver.returncode, err

    # SIGTERM (a scheduler's stop) unwinds as Ctrl-C does: Ray's driver died printing a C stack dump
    before = count()
    code, err = driver_stopped_after_a_commit(lambda driver: driver.terminate())
    assert code == 130 and "SIGTERM" not in err, err[-800:]
    assert err.strip().splitlines()[-1] == \
        f"interrupted: the {count() - before} document(s) this run wrote before it are stored", err[-800:]
    driver_stopped_after_a_commit(lambda driver: driver.kill())
    with Collection.open("crash") as coll:
        before = coll.count()
        report = index_paths(coll, [corpus])
    with Collection.create("whole") as ref, Collection.open("crash") as coll:
        whole = ref.add_files([corpus])
        assert 0 < before < coll.count()  # killed mid-job
        # what was committed is skipped by hash, not embedded again; the rest is added
        assert (report.unchanged, report.added + report.unchanged, report.updated) == (before, whole.added, 0)
        assert_same_collection(ref, coll)


# ------------------------------------------------------------------------------ build
def replay(index, gen, store):
    """What Collection._sync_index does with any index it holds: the store's changes since."""
    index.remove(store.deleted_since(gen))
    for ids, vectors in store.vectors(since_gen=gen):
        index.remove(ids)
        index.add(ids, vectors)


def test_build_exports_shards_and_searches_them_memory_mapped(tmp_path, home, ray_local):
    import random

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from semsearch.cli import cli
    from semsearch.collection import Collection
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(120)]
    with Collection.create("big", index="flat") as coll:
        coll.add_texts(texts, ids=[f"t{i}" for i in range(len(texts))], metadata={"team": "aero"})
    result = CliRunner().invoke(cli, ["build", "big", "--spec", "IVF4,Flat"])
    assert result.exit_code == 0, result.output
    assert "120 vectors in an on-disk IVF4,Flat" in result.output

    with Collection.open("big") as coll:
        table = pq.read_table(coll.path / "shards")
        assert table.num_rows == 120 and {"id", "key", "chunk", "text", "metadata", "vector"} <= set(table.column_names)
        index, gen = ondisk.attach(coll.path)
        assert gen == coll.store.generation()
        q = coll.embedder.embed(["shock wave", "panel buckling", "laminar flow"], kind="query")

        def same_as_exact():
            ids, vectors = map(np.concatenate, zip(*coll.store.vectors()))
            exact = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
            exact.add_with_ids(vectors, ids)
            _, got = index.search(q, 5, nprobe=4)  # every list: exact
            assert got.tolist() == exact.search(q, 5)[1].tolist()

        same_as_exact()
        coll.delete(["t0", "t1", "t2"])
        coll.add_texts(["a new text about vortex drag and stall"], ids=["n1"])
        replay(index, gen, coll.store)
        same_as_exact()
        index.save(coll.path / "unused", generation=coll.store.generation())
        again, gen2 = ondisk.attach(coll.path)
        assert gen2 == coll.store.generation() and again.ntotal == index.ntotal == 118
        index = again
        same_as_exact()
    with Collection.open("big") as coll:  # the collection maps its build and replays later writes
        info = coll.info()
        assert info["index"]["kind"] == "ondisk" and info["index"]["vectors"] == info["chunks"] == 118
        assert coll.search(texts[5], k=1, mode="dense")[0].id == "t5"
        assert coll.search("a new text about vortex drag and stall", k=1, mode="dense")[0].id == "n1"
        assert "t0" not in {h.id for h in coll.search(texts[0], k=5, mode="dense")}
        path = coll.path
    assert CliRunner().invoke(cli, ["rm", "big", "--yes"]).exit_code == 0
    assert not path.exists()  # the build folders, shards and changes went with it
    missing = CliRunner().invoke(cli, ["build", "nope"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_ivfpq_build_refines_with_exact_vectors(tmp_path):
    x = clustered(3000, 32, seed=4)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy()  # ids in no particular order
    # the spelling users (and choose_spec) give: the build skips faiss's polysemous training,
    # which search never uses (3 s, not 20)
    folder = ondisk.build(write_shards(tmp_path, ids, x), tmp_path / "ondisk-1", spec="IVF16,PQ8",
                          use_ray=False)
    mm = ondisk.MmapIndex.open(folder)
    assert not ondisk._new("IVF16,PQ8", 32).do_polysemous_training
    q = clustered(40, 32, seed=5)
    exact = faiss.IndexIDMap(faiss.IndexFlatIP(32))
    exact.add_with_ids(x, ids)
    D_true, I_true = exact.search(q, 10)
    D, I = mm.search(q, 10, nprobe=16)
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), I_true.tolist())])
    assert hits >= 0.95 and mm.meta["recall_at_10"] >= 0.95
    same = I == I_true  # re-ranked scores are the exact inner products
    assert np.allclose(D[same], D_true[same], atol=1e-5)


def test_collection_created_ondisk_builds_and_then_searches_its_build(tmp_path, home, ray_local, embedder,
                                                                       monkeypatch, caplog):
    import logging
    import random

    from click.testing import CliRunner

    from semsearch.cli import cli
    from semsearch.collection import INDEX_FILE, Collection
    rng = random.Random(2)
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) + f" item {i}" for i in range(120)]
    ids = [f"t{i}" for i in range(len(texts))]
    vectors = embedder.embed(texts)
    meta = [{"team": "aero" if i % 2 else "structures"} for i in range(len(texts))]
    q = embedder.embed(["shock wave", "panel buckling", "laminar flow"], kind="query")

    def hits(coll, **kw):
        return [[(h.id, round(h.score, 5)) for h in r] for r in coll.search_vectors(q, k=8, **kw)]

    with Collection.create("flat", index="flat", embedder=embedder) as flat, \
            Collection.create("big", index="ondisk", embedder=embedder) as early:
        for coll in (flat, early):
            coll.add_vectors(ids, vectors, texts, meta)
        assert hits(early) == hits(flat) and early.info()["index"]["built"] is False
        # one list: the build's search is exact, so it must equal the flat collection's
        result = CliRunner().invoke(cli, ["build", "big", "--spec", "IVF1,Flat"])
        assert result.exit_code == 0, result.output
        # a collection opened before the build switches to it on its next search
        assert hits(early) == hits(flat) and hits(early, where={"team": "aero"}) == hits(flat, where={"team": "aero"})
        info = early.info()["index"]
        assert (info["kind"], info["built"], info["waiting"], info["spec"]) == ("ondisk", True, 0, "IVF1,Flat")

        monkeypatch.setattr(ondisk, "DELTA_WARN", 2)
        with caplog.at_level(logging.WARNING, logger="semsearch"):
            for coll in (flat, early):  # adds after the build go to the delta, deletes are tombstones
                coll.add_vectors(["n1", "n2", "n3"], vectors[:3] * -1, ["new one", "new two", "new three"])
                coll.delete(["t1", "t2"])
        assert any("semsearch build big" in r.getMessage() for r in caplog.records)
        assert hits(early) == hits(flat) and early.info()["index"]["waiting"] == 3
        assert not (early.path / INDEX_FILE).exists()
    with Collection.open("big", embedder=embedder) as again, Collection.open("flat", embedder=embedder) as flat:
        assert hits(again) == hits(flat) and again.info()["index"]["vectors"] == flat.count() == 121
        assert not (again.path / INDEX_FILE).exists()


# ------------------------------------------------------------------------------ build: bad input
def small_collection(name, embedder, n=60):
    """n short documents with real vectors, without running the model on them twice."""
    from semsearch.collection import Collection
    texts = [f"note {i} on {WORDS[i % len(WORDS)]} and {WORDS[(3 * i) % len(WORDS)]}" for i in range(n)]
    coll = Collection.create(name, index="flat", embedder=embedder)
    coll.add_vectors([f"t{i}" for i in range(n)], embedder.embed(texts), texts)
    return coll


def one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], result.output
    return lines[0]


def test_build_never_deletes_a_shards_folder_holding_anything_but_shards(tmp_path, home, embedder, ray_local):
    """`build --shards DIR` replaces a build's Parquet shards; it removed the whole folder,
    so `--shards ~/data` deleted the user's files and `--shards <the collection>` the store."""
    from click.testing import CliRunner

    from semsearch.cli import cli
    from semsearch.collection import Collection
    with small_collection("kept", embedder) as coll:
        path = coll.path
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    for folder in (mine, path, path.parent):
        out = one_line_error(CliRunner().invoke(cli, ["build", "kept", "--shards", str(folder)]))
        assert "not a build's shards" in out
    assert (mine / "thesis.txt").read_text() == "years of work"
    with Collection.open("kept") as coll:
        assert coll.count() == 60 and coll.info()["index"]["kind"] == "memory"
    shards = tmp_path / "shards"  # a folder of a build's own shards is replaced, as before
    assert CliRunner().invoke(cli, ["build", "kept", "--spec", "IVF2,Flat", "--shards", str(shards)]).exit_code == 0
    ondisk.write_shard(shards / "part-00007.parquet", np.arange(3), np.eye(3, dtype=np.float32))
    assert CliRunner().invoke(cli, ["build", "kept", "--spec", "IVF2,Flat", "--shards", str(shards)]).exit_code == 0
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000.parquet"]


def test_build_rejects_what_it_cannot_build_in_one_line(home, embedder, ray_local):
    """A spec with no lists, a memory budget that is not a number and IVF-PQ on too few
    vectors were faiss RuntimeErrors ('unexpected ...'), after every vector was exported."""
    from click.testing import CliRunner

    from semsearch.cli import cli
    from semsearch.collection import Collection
    from semsearch.distributed.build import build_collection
    from semsearch.errors import InvalidInput
    small_collection("odd", embedder).close()
    for args in (["--spec", "IVF0,Flat"], ["--memory-budget", "nan"], ["--spec", "HNSW32"],
                 ["--spec", "IVF2,PQ5"]):
        one_line_error(CliRunner().invoke(cli, ["build", "odd", *args]))
    with pytest.raises(InvalidInput, match="training points|vectors"):
        ondisk.train("IVF1,PQ8", clustered(100, 32))
    assert ondisk.choose_spec(100, 4096, memory_budget_mb=1).endswith(",Flat")  # too few to train PQ
    with pytest.raises(InvalidInput, match="at least 1"):
        build_collection("odd", memory_budget_mb=0.5)
    Collection.create("empty", embedder=embedder).close()
    assert "no vectors" in one_line_error(CliRunner().invoke(cli, ["build", "empty"]))


def test_the_next_build_removes_what_a_killed_build_left(home, embedder, ray_local):
    """A build killed before it renamed its folder left a hidden .build-* folder (as large
    as the index) in the collection, forever; and so did one killed after it published,
    before it removed the build it replaced (a build folder ondisk.json does not name)."""
    from semsearch.distributed.build import build_collection
    with small_collection("again", embedder) as coll:
        path = coll.path
    for left in (path / ".build-k1ll3d", path / "ondisk-0"):
        left.mkdir()
        (left / "lists.ivfdata").write_bytes(b"\0" * 4096)
    build_collection("again", spec="IVF2,Flat")
    assert not list(path.glob(".build-*")) and ondisk.current(path).name == "ondisk-1"
    assert sorted(p.name for p in path.glob("ondisk-*") if p.is_dir()) == ["ondisk-1", "ondisk-lock"]


def test_a_ray_address_with_no_ray_behind_it_fails_in_seconds(tmp_path, home, embedder, ray_local):
    """ray.init retried an address where nothing listens (or something else does) for
    minutes, and `build` held the collection's writer lock and had exported every vector."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    from ray._private.services import canonicalize_bootstrap_address
    small_collection("far", embedder).close()
    host = canonicalize_bootstrap_address("127.0.0.1:1").rsplit(":", 1)[0]  # where Ray looks for 127.0.0.1
    corpus = write_corpus(tmp_path / "corpus", n_files=1)
    closed = socket.socket()
    closed.bind((host, 0))
    free_port = closed.getsockname()[1]
    closed.close()
    web = socket.create_server((host, 0))  # answers like a web server, not like Ray

    def answer():
        for _ in range(4):
            try:
                conn, _ = web.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        for args, says in ((["build", "far", "--ray", f"127.0.0.1:{free_port}"], "cannot connect to Ray"),
                           (["build", "far", "--ray", f"127.0.0.1:{web.getsockname()[1]}"], "not a Ray cluster"),
                           (["index", str(corpus), "--name", "far2", "--ray", f"127.0.0.1:{web.getsockname()[1]}"],
                            "not a Ray cluster"),
                           # Ray Client: Ray Data failed through it, an AttributeError once the job ran
                           (["build", "far", "--ray", f"ray://127.0.0.1:{free_port}"], "through Ray Client")):
            run = subprocess.run([sys.executable, "-m", "semsearch", *args], capture_output=True, text=True,
                                 timeout=120, env=dict(os.environ))
            assert run.returncode != 0 and says in run.stderr and "Traceback" not in run.stderr, run.stderr[-800:]
    finally:
        web.close()
    assert not (home / "far" / "shards").exists()  # nothing exported before Ray was there
    assert not (home / "far2").exists()  # nor an empty collection made (`list` showed it)


def test_a_malformed_ray_address_is_the_callers_mistake(tmp_path, home, embedder):
    """A --ray address that is no host:port said so through ray.init's own words with exit 1
    (the 2 of bad input), and `index --ray PATH --name X` only "Missing argument 'PATHS...'"."""
    import os
    import subprocess
    import sys

    small_collection("bad", embedder).close()
    corpus = write_corpus(tmp_path / "corpus", n_files=1)
    for args, says in ((["build", "bad", "--ray", "bogus:port"], "give auto or the cluster's GCS address"),
                       (["index", str(corpus), "--name", "bad2", "--ray", "127.0.0.1:99999"], "host:port"),
                       (["index", "--ray", str(corpus), "--name", "bad2"], "put --ray after the paths")):
        run = subprocess.run([sys.executable, "-m", "semsearch", *args], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ))
        assert run.returncode == 2 and says in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr[-800:]
    assert not (home / "bad2").exists()


def test_a_copied_built_collection_keeps_faiss_off_stdout(home, embedder, ray_local):
    """faiss printed 'IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename ...' (and, while
    merging, 'resizing ... to N bytes') on stdout: `search --json` of a collection moved or
    copied after its build was not JSON, and `build` printed more than its result line."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from semsearch.distributed.build import build_collection
    small_collection("orig", embedder).close()
    build_collection("orig", spec="IVF2,Flat")
    shutil.copytree(home / "orig", home / "copy")
    run = [sys.executable, "-m", "semsearch"]
    env = dict(os.environ)
    found = subprocess.run([*run, "search", "copy", "note 7", "-k", "2", "--json", "--mode", "dense"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert found.returncode == 0 and [h["id"] for h in json.loads(found.stdout)][0] == "t7", found.stdout[:300]
    built = subprocess.run([*run, "build", "copy", "--spec", "IVF2,Flat", "--ray",
                            ray_local.get_runtime_context().gcs_address],
                           capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0 and built.stdout.startswith("copy: 60 vectors"), built.stdout
    assert len(built.stdout.splitlines()) == 1, built.stdout


def test_a_build_never_publishes_into_a_collection_made_anew_under_its_name(home, embedder, ray_local, caplog):
    """`build` took its lock after Ray had started and never checked its store was still
    the collection's: an `rm` and a new collection of the same name in those seconds got
    the removed store's build, whose vectors answered under other chunks' ids."""
    import logging
    import shutil

    from semsearch.collection import Collection, delete_collection
    from semsearch.distributed.build import build_collection, building
    from semsearch.errors import NoSuchCollection

    small_collection("re", embedder).close()
    with Collection.open("re") as held:
        delete_collection("re")
        small_collection("re", embedder).close()
        with pytest.raises(NoSuchCollection, match="removed while it was open here"):
            with building(held):
                pass
    # and a build copied into another collection (or published there before this fix) is not mapped
    build_collection("re", spec="IVF2,Flat")
    small_collection("other", embedder).close()
    for name in ("ondisk-1", "ondisk.json"):
        copy = shutil.copytree if (home / "re" / name).is_dir() else shutil.copy
        copy(home / "re" / name, home / "other" / name)
    with caplog.at_level(logging.WARNING, logger="semsearch"), Collection.open("other") as other:
        assert other.info()["index"]["kind"] != "ondisk"
        assert other.search("note 7", k=1, mode="dense")[0].id == "t7"
    assert "belongs to another collection" in caplog.text


def test_index_on_ray_reports_a_document_too_large_to_embed_as_add_files_does(tmp_path, home, ray_local):
    """A file skipped while embedding (over 10 million characters) was counted as added
    by `index --ray` ('added 3 ... (2 documents in the collection)')."""
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("shock wave in a nozzle")
    (corpus / "b.txt").write_text("panel buckling under load")
    (corpus / "huge.txt").write_text("word " * 2_000_001)
    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local, r_ray = local.add_files([corpus]), index_paths(onray, [corpus])
        assert r_ray.added == onray.count() == 2 and same_report(r_local, r_ray), (r_local, r_ray)
        assert "document too large" in dict(r_ray.skipped)[str(corpus / "huge.txt")]


def test_writers_go_on_while_a_collection_builds_and_builds_exclude_each_other(home, embedder, ray_local):
    """A build held the writer lock from export to publish (10-20 minutes at 100M vectors,
    by docs/scale.md): every writer failed after 10 s ('still being written')."""
    from semsearch.collection import Collection, delete_collection
    from semsearch.distributed.build import build_collection, building
    from semsearch.errors import CollectionBusy
    with small_collection("busy", embedder) as coll:
        with coll.writer():  # another process's long write, or writes all along the build
            built = build_collection("busy", spec="IVF2,Flat")
        coll.add_texts(["written right after the build about vortex drag"], ids=["late"])
        coll.delete(["t3"])
        with building(coll):
            with pytest.raises(CollectionBusy, match="being built"):
                build_collection("busy", spec="IVF2,Flat")
            with pytest.raises(CollectionBusy, match="being built"):  # rm waits for the build too
                delete_collection("busy")
    assert built["ntotal"] == 60
    with Collection.open("busy") as again:
        info = again.info()
        assert (info["index"]["kind"], info["index"]["vectors"], info["documents"]) == ("ondisk", 60, 60)
        assert again.search("written right after the build about vortex drag", k=1, mode="dense")[0].id == "late"
        assert "t3" not in {h.id for h in again.search("note 3", k=10, mode="dense")}


def test_the_next_write_removes_a_changes_file_a_killed_save_left(home, embedder, ray_local):
    """A save of the changes since a build killed before its rename left its temporary
    file (as large as the in-memory delta, up to GBs) beside the build, forever. And the
    build, its pointer and the changes are as readable as the store: they were 0700/0600,
    so another user sharing the collection saw no build and loaded every vector in memory."""
    import os
    import stat

    from semsearch.collection import Collection
    from semsearch.distributed.build import build_collection
    small_collection("saved", embedder).close()
    os.chmod(home / "saved" / "store.sqlite", 0o640)  # a collection its group reads
    build_collection("saved", spec="IVF2,Flat")
    with Collection.open("saved", embedder=embedder) as coll:
        orphan = coll.path / f".{ondisk.CHANGES}.k1ll3d.tmp"
        orphan.write_bytes(b"\0" * 4096)
        coll.add_texts(["one more note"], ids=["more"])
        assert not orphan.exists() and (coll.path / ondisk.CHANGES).is_file()
        build = ondisk.current(coll.path)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [build, *build.iterdir()]}
        assert modes == {build.name: 0o750, **{p.name: 0o640 for p in build.iterdir()}}
        assert {stat.S_IMODE((coll.path / f).stat().st_mode) for f in (ondisk.POINTER, ondisk.CHANGES)} == {0o640}


def test_a_process_holding_a_collection_moves_to_each_new_build(home, embedder, ray_local):
    """A server that opened a collection kept the build it first mapped: results stayed right
    (the store is replayed) but the replaced build's files, deleted by the next build, kept
    their disk space (as large as the index) until the process ended; and an in-memory
    collection's index.faiss stayed beside its build, unused, as large as its vectors."""
    from semsearch.collection import INDEX_FILE
    from semsearch.distributed.build import build_collection

    def mapped():
        with open("/proc/self/maps") as f:
            return f.read()

    with small_collection("held", embedder) as held:
        assert (held.path / INDEX_FILE).is_file()
        first = Path(build_collection("held", spec="IVF2,Flat")["folder"])
        fifth = f"note 5 on {WORDS[5 % len(WORDS)]} and {WORDS[15 % len(WORDS)]}"  # as small_collection has it
        assert held.search(fifth, k=1, mode="dense")[0].id == "t5"
        assert held.info()["index"]["build"] == first.name
        assert str(first) in mapped() and not (held.path / INDEX_FILE).exists()
        held.add_texts(["written between the builds about vortex drag"], ids=["between"])
        second = Path(build_collection("held", spec="IVF2,Flat")["folder"])
        assert second != first and not first.exists()
        assert held.search("written between the builds about vortex drag", k=1, mode="dense")[0].id == "between"
        assert held.info()["index"]["build"] == second.name
        assert str(first) not in mapped() and str(second) in mapped()
        assert not (held.path / INDEX_FILE).exists()
        # nor the part indexes a build merges (deleted after the merge, as large as the index)
        assert not [line for line in mapped().splitlines() if str(held.path) in line and "shard-" in line]


def test_an_actor_sends_a_big_file_back_a_batch_at_a_time(tmp_path, home, monkeypatch):
    """An actor call returned all the documents of its files at once: a JSONL dump of
    millions of records was held whole (vectors, texts, their pickles) in the actor, the
    object store and the driver. It now yields them as they are embedded, in order."""
    import json
    import pickle

    from semsearch import ingest
    from semsearch.collection import Collection
    from semsearch.distributed.pipeline import PrepareFiles
    monkeypatch.setattr(ingest, "FLUSH_CHUNKS", 8)  # one embedded batch: 8 chunks
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps({"id": f"r{i}", "text": f"record {i} on {WORDS[i % len(WORDS)]}"}) + "\n"
                            for i in range(40)) + "{not json\n")
    (tmp_path / "note.txt").write_text("the boundary layer separates")
    with Collection.create("c") as coll:
        actor = PrepareFiles(coll.pinned, "cpu", 1, coll.config["chunk_tokens"], coll.config["overlap"])
        known = json.dumps({f"{dump}#r0": "stale", f"{dump}#r1": None})
        unit = json.dumps({"paths": [str(dump), str(tmp_path / "note.txt")], "part": None, "files": 2})
        outputs = list(actor({"unit": np.array([unit]), "known": np.array([known])}))
    sent = [[pickle.loads(r) for r in out["record"]] for out in outputs]
    assert len(sent) >= 5 and max(sum(r[0] == "doc" for r in records) for records in sent) <= 8
    records = [r for records in sent for r in records]
    assert [r[1] for r in records if r[0] == "doc"] == [f"{dump}#r{i}" for i in range(40)] + [str(tmp_path / "note.txt")]
    assert all(r[2].vectors.shape == (1, 384) for r in records if r[0] == "doc")
    assert any(r[0] == "skipped" and r[1].startswith(str(dump)) and "invalid JSON" in r[2] for r in records)
    assert records[-1] == ("done", 2)


def test_files_that_kill_their_worker_every_time_end_the_job_in_one_line(tmp_path, home, ray_local):
    """Ray Data runs a call again for ever when its worker dies: a file that kills its
    worker every time (out of memory, a crash) hung `index --ray` for ever. The call is
    now tried RETRIES + 1 times, then the job ends in one line saying where it stopped;
    what was committed stays, searchable."""
    import signal
    import threading

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.distributed.pipeline import RETRIES
    from semsearch.errors import SemsearchError
    corpus = write_corpus(tmp_path / "corpus", n_files=4)
    with Collection.create("poisoned") as coll:
        coll.add_files([corpus])
        before = coll.count()
    (corpus / "z.txt").write_text("the file that kills its worker, about vortex drag " * 3000)
    earlier = {p.pid for p in _map_workers()}  # idle actors of earlier jobs
    kills, stop = [], threading.Event()

    def killer():  # the only file to embed is z.txt: a worker that loads the model is on it
        while not stop.is_set() and len(kills) < RETRIES + 3:
            for p in _map_workers():
                try:
                    if p.pid not in earlier and any("onnxruntime" in m.path for m in p.memory_maps()):
                        p.send_signal(signal.SIGKILL)
                        kills.append(p.pid)
                except Exception:  # noqa: BLE001 - gone already
                    pass
            stop.wait(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with Collection.open("poisoned") as coll, pytest.raises(SemsearchError) as failed:
            index_paths(coll, [corpus], actors=1)
    finally:
        stop.set()
        thread.join()
    assert len(kills) == RETRIES + 1  # before: retried for ever (here until the killer stopped)
    said = str(failed.value)
    assert "died" in said and "\n" not in said and f"not indexed: the files from {corpus}" in said
    with Collection.open("poisoned") as coll:
        assert coll.count() == before
        assert coll.search("panel buckling under load", k=1, mode="dense")[0].id == f"{corpus / 'records.jsonl'}#r2"


def test_build_exports_a_store_batch_at_a_time_not_a_whole_shard(tmp_path, home, embedder, monkeypatch):
    """export_shards gathered each shard (a million rows: vectors, texts and metadata, ~3 GB,
    and again as much while concatenating them) in memory before writing it."""
    import tracemalloc

    from semsearch.collection import Collection
    from semsearch.distributed import build
    n = 4000
    vectors = clustered(n, 384, seed=6)  # 6 MB
    with Collection.create("wide", index="flat", embedder=embedder) as coll:
        coll.add_vectors([f"v{i}" for i in range(n)], vectors, [f"text {i}" for i in range(n)])
        monkeypatch.setattr(build, "EXPORT_ROWS", 200, raising=False)
        import pyarrow.parquet  # noqa: F401 - imported before, not counted
        tracemalloc.start()
        try:
            shards, _ = build.export_shards(coll, tmp_path / "shards")  # one shard
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(shards) == 1 and ondisk.shard_rows(shards[0]) == n
    assert np.array_equal(np.concatenate([v for _, v in ondisk.read_shard(shards[0])]), vectors)
    assert peak < vectors.nbytes / 4, peak


# ------------------------------------------------------------------------------ corners of a cut file
@pytest.fixture
def after_the_cut():
    """after_the_cut(path, change): ``change()`` runs as the driver says it cut ``path`` in
    parts ("ray: PATH in N parts"): after the cut, before the job reads any part."""
    import logging

    from contextlib import contextmanager
    logger = logging.getLogger("semsearch")

    class Hook(logging.Handler):
        def __init__(self, path, change):
            super().__init__()
            self.path, self.change = path, change

        def emit(self, record):
            if record.getMessage().startswith(f"ray: {self.path} in "):
                self.change()

    @contextmanager
    def hooked(path, change):
        hook, level = Hook(path, change), logger.level
        logger.addHandler(hook)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(hook)
            logger.setLevel(level)

    return hooked


@pytest.fixture(scope="module")
def dump_indexed(tmp_path_factory, ray_local):
    """A corpus (dump.jsonl, note.txt) and a collection of it indexed on Ray in 2,000-byte
    parts, made once for the tests below, which each take a copy of the collection (its
    keys are the corpus's paths: the corpus stays here, written anew for each test)."""
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    base = tmp_path_factory.mktemp("cut")
    corpus = base / "corpus"

    def write():
        corpus.mkdir(exist_ok=True)
        write_dump(corpus / "dump.jsonl")
        (corpus / "note.txt").write_text("the boundary layer separates near the trailing edge")
        return corpus

    with Collection.create(base / "c") as coll:
        index_paths(coll, [write()], actors=2, part_bytes=2000)
    return write, base / "c"


@pytest.mark.parametrize("change", ["rewritten", "appended", "removed"])
def test_a_jsonl_file_changed_after_its_cut_is_skipped_in_one_line_and_nothing_of_it_read(
        home, dump_indexed, after_the_cut, change):
    """A file rewritten between the cut and the read gave parts that start mid-line: a line's
    tail that is valid JSON was indexed as a record of its own (keyed by the part's first
    line), the rest reported as "invalid JSON" at lines it is not; one appended to was cut
    short. Now no part reads a file other than the one cut: the file is skipped in one line
    (transient: nothing indexed of it is lost) and the next run indexes it as `index` does."""
    import shutil

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.loaders import CHANGED, jsonl_parts
    from test_jsonl_parts import fragments_at
    write_corpus_again, indexed = dump_indexed
    corpus = write_corpus_again()  # as it was indexed (an earlier test changed it)
    dump = corpus / "dump.jsonl"
    part_bytes = 2000
    shutil.copytree(indexed, home / "c")
    with Collection.open("c") as coll:
        before = contents(coll)[0]
        assert f"{dump}#r2" in before and str(corpus / "note.txt") in before
        write_dump(dump, change=200)  # to be read again, and cut again
        parts = jsonl_parts(str(dump), part_bytes)
        assert len(parts) > 4
        changes = {"rewritten": lambda: dump.write_bytes(fragments_at(parts)),
                   "appended": lambda: dump.write_text(dump.read_text() + '{"text": "one more record"}\n'),
                   "removed": dump.unlink}
        with after_the_cut(dump, changes[change]):
            r = index_paths(coll, [corpus], actors=2, part_bytes=part_bytes)
        reason = "No such file or directory" if change == "removed" else CHANGED
        assert r.skipped == [(str(dump), reason)] and str(dump) in r.unread, r.skipped
        assert (r.added, r.updated, r.removed, r.chunks) == (0, 0, 0, 0) and contents(coll)[0] == before
        r_again = index_paths(coll, [corpus], actors=2, part_bytes=part_bytes)
        with Collection.create("local") as local:
            r_local = local.add_files([corpus])
            assert sorted(r_again.skipped) == sorted(r_local.skipped)
            assert contents(coll)[0].keys() == contents(local)[0].keys()


def test_a_duplicate_id_in_a_later_part_is_judged_once_as_index_does(tmp_path, home, ray_local):
    """A record whose id an earlier part had is a duplicate, and only that: `index` never
    reads it. `index --ray` embedded it in its part first, and reported it twice where
    embedding skipped it too ("duplicate id" and "document too large", or "no text"), and
    counted its undecodable bytes."""
    import json

    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    huge = "word " * 2_000_001  # over 10 million characters: too large to embed
    firsts = [{"id": "huge", "text": "café vortex drag"}, {"id": "blank", "text": "lift"},
              {"id": "stray", "text": "stall"}, {"id": "huge-first", "text": huge}]
    seconds = [{"id": "huge", "text": huge}, {"id": "blank", "text": "\u200b"},
               {"id": "stray", "text": "stall \udcff"}, {"id": "huge-first", "text": "a short one"}]
    filler = [json.dumps({"id": f"r{i}", "text": f"record {i} on {WORDS[i % len(WORDS)]}"}) for i in range(40)]
    lines = [json.dumps(r) for r in firsts] + filler
    for r in seconds:  # each in a part of its own, after the first's
        lines += [json.dumps(r, ensure_ascii=False)] + [json.dumps({"text": f"between, {i}"}) for i in range(30)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "dump.jsonl").write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))  # \xff
    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local = local.add_files([corpus])
        r_ray = index_paths(onray, [corpus], actors=2, part_bytes=1000)
        assert same_report(r_local, r_ray), (r_local, r_ray)
        assert sorted(reason for _, reason in r_ray.skipped) == [
            "document too large (over 10 million characters): split it into several files"] + [
            f"duplicate id {i}" for i in ("blank", "huge", "huge-first", "stray")]
        assert_same_collection(local, onray)


def test_files_cut_in_parts_index_on_ray_as_index_does(tmp_path, home, ray_local):
    """CRLF, no final newline, blank lines, a byte-order mark, UTF-16 (kept whole), a line
    longer than a part: same keys, chunks and report as `index`."""
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from test_jsonl_parts import EDGES
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in EDGES.items():
        (corpus / f"{name.replace(' ', '-')}.jsonl").write_bytes(data)
    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local = local.add_files([corpus])
        r_ray = index_paths(onray, [corpus], actors=2, part_bytes=333)
        assert same_report(r_local, r_ray), (r_local, r_ray)
        assert_same_collection(local, onray)
