"""When a writer saves the index file: once the chunks changed since it reach
SAVE_FLOOR (or SAVE_SHARE of the index), not after every write. Whatever the file lacks,
an opener replays from the store, so a small write costs no rewrite of the whole file
(at 100k vectors, 154 MB and ~0.4 s for one document added). Saves are counted by the
file's identity and generation, not by time."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from semsearch import Collection
from semsearch.collection import SAVE_FLOOR
from semsearch.errors import InvalidInput
from semsearch.index import VectorIndex

N = 3 * SAVE_FLOOR  # SAVE_FLOOR is above SAVE_SHARE of N: the floor decides


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(coll, prefix: str, vectors) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    return coll.add_vectors(ids, vectors, [f"document {i}" for i in ids])


def file_state(folder):
    """The index file's identity and the store generation it was saved at."""
    st = os.stat(folder / "index.faiss")
    return st.st_ino, st.st_mtime_ns, VectorIndex.load(folder / "index.faiss")[1]


def top(coll, vector) -> str:
    return coll.search_vectors(vector[None], k=1)[0][0].id


@pytest.fixture
def big(home, embedder):
    """A collection of N vectors v0.., its index file saved at the generation of the add."""
    with Collection.create("c", embedder=embedder) as c:
        add(c, "v", unit(N, embedder.dim, 0))
        assert file_state(home / "c")[2] == c.info()["generation"]
    return home / "c"


def test_single_document_writes_leave_the_index_file_as_it_was(big, embedder):
    """Every write rewrote (and fsynced) the whole index file: a server taking one
    document a request wrote ~1.5 GB per request at 1M vectors."""
    saved = file_state(big)
    new = unit(3, embedder.dim, 1)
    with Collection.open(big, embedder=embedder) as c:
        add(c, "new", new[:1])
        c.add_vectors(["v5"], new[1:2], ["v5 replaced"])
        assert c.delete(["v7"]) == 1
        c.add_texts(["a note about harbours and lighthouses"], ids=["note"])
        assert file_state(big) == saved
    assert file_state(big) == saved  # closing does not save either: the store holds it all
    with Collection.open(big, embedder=embedder) as c:  # an opener replays what the file lacks
        assert top(c, new[0]) == "new0" and top(c, new[1]) == "v5"
        assert "v7" not in [h.id for h in c.search_vectors(unit(N, embedder.dim, 0)[7:8], k=5)[0]]
        assert c.search("harbours and lighthouses", k=1, mode="dense")[0].id == "note"
        assert c.info()["index"]["vectors"] == c.info()["chunks"] == N + 1


def test_the_index_file_is_saved_once_the_changes_since_it_reach_the_floor(big, embedder):
    below = SAVE_FLOOR * 3 // 5
    saved = file_state(big)
    with Collection.open(big, embedder=embedder) as c:
        add(c, "a", unit(below, embedder.dim, 2))
        assert file_state(big) == saved
        add(c, "b", unit(below, embedder.dim, 3))  # 2 x below >= SAVE_FLOOR since the file
        assert file_state(big)[2] == c.info()["generation"]
        again = file_state(big)
        add(c, "c", unit(below, embedder.dim, 4))  # counted from the new file
        assert file_state(big) == again


def test_small_writes_of_two_processes_add_up_to_a_save(big, embedder):
    """A writer counts what it replays of another's writes: the file on disk never lags
    by SAVE_FLOOR once a writer has finished, whoever wrote the rest."""
    below = SAVE_FLOOR * 3 // 5
    saved = file_state(big)
    with Collection.open(big, embedder=embedder) as one, Collection.open(big, embedder=embedder) as two:
        one.sync_index(), two.sync_index()  # both loaded from the file
        add(one, "a", unit(below, embedder.dim, 2))
        assert file_state(big) == saved
        add(two, "b", unit(below, embedder.dim, 3))
        assert file_state(big)[2] == two.info()["generation"]


KILLED = """
import os, signal, sys
import numpy as np
from semsearch import Collection
sys.path.insert(0, sys.argv[2])
from test_index_saves import add, unit
c = Collection.open(sys.argv[1])
for i in range(5):
    add(c, f"k{i}-", unit(1, c.pinned["dim"], 10 + i))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_after_small_writes_leaves_each_of_them_searchable(big, embedder):
    child = subprocess.run([sys.executable, "-c", KILLED, str(big), os.path.dirname(__file__)])
    assert child.returncode == -signal.SIGKILL
    with Collection.open(big, embedder=embedder) as c:
        assert file_state(big)[2] < c.info()["generation"]  # the file lags: replayed on open
        for i in range(5):
            assert top(c, unit(1, embedder.dim, 10 + i)[0]) == f"k{i}-0"
        assert c.info()["index"]["vectors"] == c.info()["chunks"] == N + 5


@pytest.mark.parametrize("spec", ["Flat", "HNSW32", "IVF4,Flat"])
def test_an_index_still_refuses_an_id_it_holds_and_takes_back_one_it_removed(spec):
    """Ids above every id held skip the duplicate check and the removal scan: what is
    below still gets both."""
    v = unit(300, 16, 5)
    idx = VectorIndex.build(spec, np.arange(100, 400), v)
    idx.add([500], v[:1])
    with pytest.raises(InvalidInput, match="already in the index"):
        idx.add([150, 600], v[1:3])
    idx.remove([500, 900])  # 900: above everything, ignored
    idx.add([500], v[:1])
    assert idx.ntotal == 301
    assert idx.search(v[:1], 1)[1][0][0] in (100, 500)  # the same vector under both ids
