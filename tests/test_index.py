"""VectorIndex on realistic vectors: low-rank structure plus noise, so neighbours
are neither trivial (clusters) nor meaningless (uniform)."""
import os
import faiss
import numpy as np
import pytest

from semsearch.index import IndexFileError, VectorIndex, choose_spec

DIM, N, K = 128, 20_000, 10
KINDS = ["flat", "hnsw", "ivf", "ivfpq"]


def make_vectors(n, seed, dim=DIM, rank=32):
    """Random rank-32 basis, coefficients with decaying variance, isotropic noise."""
    basis = np.random.default_rng(123).standard_normal((rank, dim))
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((n, rank)) * 0.85 ** np.arange(rank)
    x = coef @ basis / np.sqrt(dim) + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim) * 3
    x = x.astype(np.float32)
    faiss.normalize_L2(x)
    return x


@pytest.fixture(scope="module")
def data():
    ids = np.random.default_rng(7).choice(10**12, N, replace=False).astype(np.int64)
    return ids, make_vectors(N, 1), make_vectors(200, 2)


@pytest.fixture(scope="module")
def built(data):
    ids, x, _ = data
    return {kind: VectorIndex.build(kind, ids, x) for kind in KINDS}


def exact(ids, x, q, k):
    s = q @ x.T
    top = np.argsort(-s, axis=1)[:, :k]
    return ids[top]


def recall(got, truth):
    return np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth)])


@pytest.mark.parametrize("kind", KINDS)
def test_build_reaches_recall_on_held_out_queries(built, data, kind):
    ids, x, q = data
    index = built[kind]
    scores, got = index.search(q, K)
    assert scores.shape == got.shape == (len(q), K) and got.dtype == np.int64
    r = recall(got, exact(ids, x, q, K))
    print(kind, index.spec, index.params, r)
    assert r >= 0.95
    assert index.ntotal == N
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_specs_resolved(built):
    assert built["flat"].spec == "Flat" and built["flat"].params == {}
    assert built["hnsw"].spec == "HNSW32" and "efSearch" in built["hnsw"].params
    assert built["ivf"].spec.startswith("IVF") and "nprobe" in built["ivf"].params
    assert built["ivfpq"].spec.endswith(",RFlat")
    assert set(built["ivfpq"].params) == {"nprobe", "k_factor"}


@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search(built, data, kind):
    ids, x, q = data
    index = built[kind]
    rng = np.random.default_rng(3)
    for n_allowed in (15, 3000):
        pick = rng.choice(N, n_allowed, replace=False)
        allowed = ids[pick]
        _, got = index.search(q[:20], K, allowed_ids=allowed)
        assert np.all(got >= 0), "k hits must come back when k allowed ids exist"
        assert np.isin(got, allowed).all()
        if n_allowed == 15:  # very selective: exactly the true top-10 among the allowed
            truth = exact(allowed, x[pick], q[:20], K)
            assert np.array_equal(np.sort(got, 1), np.sort(truth, 1))
    _, got = index.search(q[:2], K, allowed_ids=ids[:3])
    assert set(got[0][:3]) == set(ids[:3]) and np.all(got[:, 3:] == -1)
    _, got = index.search(q[:2], K, allowed_ids=np.array([-5, 42], np.int64))
    assert np.all(got == -1)


@pytest.mark.parametrize("kind", KINDS)
def test_remove(data, kind):
    ids, x, q = data
    n = 4000
    index = VectorIndex.build(kind, ids[:n], x[:n])
    _, before = index.search(q[:50], K)
    gone = np.unique(before[:, :3])
    index.remove(gone)
    index.remove(np.array([12345], np.int64))  # unknown id: ignored
    assert index.ntotal == n - len(gone)
    _, after = index.search(q[:50], K)
    assert not np.isin(after, gone).any() and np.all(after >= 0)
    _, filt = index.search(q[:50], K, allowed_ids=np.concatenate([gone, ids[n - 20:n]]))
    assert not np.isin(filt, gone).any() and np.all(filt >= 0)
    if kind in ("hnsw", "ivfpq"):  # HNSW and IndexRefine cannot delete: tombstones
        assert index.tombstone_ratio == pytest.approx(len(gone) / n)
    else:
        assert index.tombstone_ratio == 0.0
    # a removed id may come back with a new vector; a live id may not be added twice
    index.add(gone[:1], x[n:n + 1])
    _, top = index.search(x[n:n + 1], 1)
    assert top[0, 0] == gone[0]
    with pytest.raises(ValueError):
        index.add(gone[:1], x[n:n + 1])


def test_save_load_round_trip(tmp_path, data):
    ids, x, q = data
    for kind in ("hnsw", "ivf"):
        index = VectorIndex.build(kind, ids[:3000], x[:3000])
        index.remove(ids[:100])
        path = tmp_path / f"{kind}.faiss"
        index.save(path, generation=17)
        loaded, gen = VectorIndex.load(path)
        assert gen == 17
        assert (loaded.spec, loaded.params, loaded.dim) == (index.spec, index.params, index.dim)
        assert loaded.ntotal == index.ntotal and loaded.tombstone_ratio == index.tombstone_ratio
        a, b = index.search(q, K), loaded.search(q, K)
        assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
        assert not np.isin(b[1], ids[:100]).any()
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupt_files_raise_index_file_error(tmp_path, data):
    ids, x, _ = data
    path = tmp_path / "i.faiss"
    VectorIndex.build("flat", ids[:500], x[:500]).save(path, generation=1)
    raw = path.read_bytes()
    for bad in (raw[: len(raw) // 2], raw[:5], b"", raw[:-1] + bytes([raw[-1] ^ 1])):
        path.write_bytes(bad)
        with pytest.raises(IndexFileError):
            VectorIndex.load(path)
    with pytest.raises(IndexFileError):
        VectorIndex.load(tmp_path / "missing.faiss")
    path.write_bytes(b"SEMSIDX\x01" + raw[:-12])  # version 1: magic first, none at the end
    with pytest.raises(IndexFileError, match="older semsearch format"):
        VectorIndex.load(path)


def test_factory_string_and_invalid_spec(data):
    ids, x, q = data
    index = VectorIndex.build("IVF64,SQ8", ids[:5000], x[:5000])
    assert index.spec == "IVF64,SQ8"
    r = recall(index.search(q, K)[1], exact(ids[:5000], x[:5000], q, K))
    assert r >= 0.9
    index.remove(ids[:10])
    _, got = index.search(q, K, allowed_ids=ids[:30])
    assert np.isin(got, ids[10:30]).all()
    with pytest.raises(ValueError, match="invalid index spec"):
        VectorIndex.build("Bogus42", ids[:100], x[:100])
    with pytest.raises(ValueError):
        VectorIndex.empty(DIM, "ivf")  # needs training


def test_empty_index_and_validation():
    index = VectorIndex.empty(DIM)
    q = make_vectors(3, 9)
    scores, got = index.search(q, 5)
    assert got.shape == (3, 5) and np.all(got == -1)
    with pytest.raises(ValueError):
        index.search(q, 0)
    with pytest.raises(ValueError):
        index.add(np.arange(3), make_vectors(3, 9, dim=64))
    with pytest.raises(ValueError):
        index.add(np.arange(2), q)
    with pytest.raises(ValueError):
        index.add(np.arange(3).astype(float), q)
    index.add(np.array([5, 6, 7]), q.astype(np.float64))
    assert index.search(q[:1], 2)[1][0, 0] == 5
    hnsw = VectorIndex.empty(DIM, "hnsw")
    hnsw.add(np.array([1, 2, 3]), q)
    hnsw.remove([2])
    assert set(hnsw.search(q, 5)[1].ravel()) == {1, 3, -1}


def test_choose_spec():
    assert choose_spec(10_000, 384) == "Flat"
    assert choose_spec(1_000_000, 384) == "HNSW32"
    compressed = choose_spec(1_000_000, 384, memory_budget_mb=500)
    assert compressed.startswith("IVF") and "PQ48x4fs" in compressed and "Refine" in compressed
    assert choose_spec(10_000, 384, memory_budget_mb=1) .startswith("IVF")


def test_budgeted_auto_build_reaches_recall(data):
    ids, x, q = data
    index = VectorIndex.build("auto", ids, x, memory_budget_mb=5)
    assert "Refine(SQ8)" in index.spec
    assert recall(index.search(q, K)[1], exact(ids, x, q, K)) >= 0.95


def test_to_gpu_is_honest(built, data):
    ids, x, q = data
    index = built["ivf"]
    assert faiss.get_num_gpus() == 0
    assert index.to_gpu() is False
    assert np.all(index.search(q[:5], K)[1] >= 0)


@pytest.mark.parametrize("kind", KINDS)
def test_filter_through_selector(built, data, kind, monkeypatch):
    """With exact scoring of small filters switched off, the IDSelector path
    (efSearch/nprobe raised by 1/fraction allowed) still finds k allowed hits."""
    import semsearch.index as mod
    monkeypatch.setattr(mod, "EXACT_FILTER_MAX", 0)
    ids, x, q = data
    pick = np.random.default_rng(4).choice(N, 2000, replace=False)
    _, got = built[kind].search(q[:50], K, allowed_ids=ids[pick])
    assert np.all(got >= 0) and np.isin(got, ids[pick]).all()
    assert recall(got, exact(ids[pick], x[pick], q[:50], K)) >= 0.9


def test_load_starts_over_when_a_writer_replaces_the_file_meanwhile(tmp_path, data, monkeypatch):
    ids, x, _ = data
    path, newer = tmp_path / "i.faiss", tmp_path / "new.faiss"
    VectorIndex.build("flat", ids[:100], x[:100]).save(path, generation=1)
    VectorIndex.build("flat", ids[:300], x[:300]).save(newer, generation=2)
    read_index = faiss.read_index

    def writer_renames_first(name, *args):  # a writer's atomic save lands mid-load
        if newer.exists():
            os.replace(newer, path)
        return read_index(name, *args)

    monkeypatch.setattr(faiss, "read_index", writer_renames_first)
    index, generation = VectorIndex.load(path)
    assert (generation, index.ntotal) == (2, 300)  # never file 1's header with file 2's vectors
