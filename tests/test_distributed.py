"""Scale-out: the on-disk IVF build and the Ray Data ingest, on a real local Ray cluster."""
import faiss
import numpy as np
import pytest

from semsearch.distributed import ondisk


@pytest.fixture(scope="session")
def ray_local(model_folder):
    """One local Ray for the whole session (2 CPUs, loopback, no dashboard); started after
    the model export so the workers inherit SEMSEARCH_CACHE."""
    import ray
    from semsearch.distributed.cluster import _runtime_env
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False, runtime_env=_runtime_env() or None)
    yield ray
    ray.shutdown()


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
    folder = ondisk.build(shards, tmp_path / "ondisk-1", spec="IVF16,Flat", use_ray=True)
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
