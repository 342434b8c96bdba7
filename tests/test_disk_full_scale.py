"""A full disk on the paths for big corpora, for real, on test_disk_full's small tmpfs
(Ray's own temp folder stays on the real disk): `semsearch build`, the changes file of an
on-disk collection, and `index --ray`. Each stops in one line (OutOfSpace: exit 74), keeps
the index in use, and removes at once what it wrote (on a full disk, a leftover as large
as the index keeps the disk full). A build that runs as a subprocess could die of SIGBUS
(faiss writes the merged lists through a memory map), so the failing ones run as one."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import test_disk_full
from test_disk_full import ROOM, fill, free, full, make, text

from semsearch.collection import Collection

disk, room = test_disk_full.disk, test_disk_full.room  # its fixtures: a tmpfs for this module, a folder on it

N = 300  # vectors: store, shards and the build's peak fit the 4 MiB tmpfs together
SPEC = "IVF4,Flat"


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def on_disk(folder, embedder, n: int = N):
    with Collection.create(folder, index="ondisk", embedder=embedder) as coll:
        coll.add_vectors([f"v{i}" for i in range(n)], vectors(n), [f"note {i}" for i in range(n)])


def cli(*args, ray) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "semsearch", *map(str, args), "--ray",
                           ray.get_runtime_context().gcs_address],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def one_line(run: subprocess.CompletedProcess, folder) -> str:
    """Exit 74 and one `error:` line saying the disk is full (a SIGBUS is -7)."""
    assert run.returncode == 74, (run.returncode, run.stderr[-1500:])
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-1500:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-1500:]
    full(errors[0], folder)
    return errors[0]


def size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_build_on_a_disk_that_fills_stops_in_one_line_and_keeps_the_index_in_use(room, embedder, ray_local):
    """It said 'No space left on device' and left its .tmp shard (exporting), 'unexpected
    RayTaskError(RuntimeError)' (filling: faiss's write error), or died of SIGBUS (merging:
    faiss writes the lists through a memory map), leaving its scratch folder, as large as
    the index, on the full disk. Now it stops in one line before writing what cannot fit."""
    from semsearch.distributed.build import build_collection

    folder = room / "c"
    on_disk(folder, embedder)
    build_collection(folder, spec=SPEC)
    pointer = (folder / "ondisk.json").read_text()
    shards, lists = size(folder / "shards"), (folder / "ondisk-1" / "lists.ivfdata").stat().st_size
    for f in (folder / "shards").iterdir():  # as a failed build leaves the folder
        f.unlink()
    # the export does not fit; then it does, but the build's peak (its part files and the
    # merged lists, 2 x lists) does not: the merge would have died of SIGBUS
    for left, says, where in ((shards // 2, "exporting", folder / "shards"),
                              (shards + lists + lists // 2, "needs about", folder)):
        fill(room.parent, left)
        line = one_line(cli("build", folder, "--spec", SPEC, ray=ray_local), where)
        assert says in line and "the index in use is unchanged" in line, line
        free(room.parent)
        assert (folder / "ondisk.json").read_text() == pointer
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith((".", "ondisk-"))) == \
            ["ondisk-1", "ondisk-lock"]  # no scratch, no half build
        assert list((folder / "shards").iterdir()) == []  # as large as the vectors: removed
        with Collection.open(folder, embedder=embedder) as coll:
            assert coll.info()["index"].get("build") == "ondisk-1" and coll.count() == N
            assert coll.search_vectors(vectors(N)[7:8], k=1)[0][0].id == "v7"
    assert build_collection(folder, spec=SPEC)["folder"] == str(folder / "ondisk-2")


def test_a_full_disk_leaves_no_temporary_changes_file_and_the_write_stands(room, embedder, ray_local, caplog):
    """An on-disk collection saves its changes since the build (as large as them) after
    each write; on a full disk the save failed with a warning, as it should (the store has
    the write), but left its temporary file, which kept the disk's last bytes."""
    from semsearch.distributed.build import build_collection

    folder = room / "c"
    on_disk(folder, embedder)
    build_collection(folder, spec=SPEC)
    with Collection.open(folder, embedder=embedder) as coll:
        coll.add_vectors([f"n{i}" for i in range(200)], vectors(200, 1), [f"new {i}" for i in range(200)])
        assert (folder / "ondisk-changes.npz").stat().st_size > 200 * 384 * 4
        fill(room.parent, ROOM + (64 << 10))
        with caplog.at_level(logging.WARNING, logger="semsearch"):
            coll.add_vectors(["m0"], vectors(1, 2), ["more 0"])
        assert "cannot save the index file" in caplog.text
        assert coll.count() == N + 201
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
        free(room.parent)
    with Collection.open(folder, embedder=embedder) as coll:  # replayed from the store
        assert coll.count() == N + 201
        assert coll.search_vectors(vectors(1, 2), k=1)[0][0].id == "m0"


def test_index_on_ray_into_a_full_disk_exits_74_in_one_line(room, embedder, ray_local, tmp_path):
    """One line, exit 74, nothing stored. (With a Ray of its own, the command also printed
    Ray Data's traceback below that line, as it closed its stream of results only after Ray
    had shut down; on the session's Ray, as here, that never showed: checked by hand.)"""
    folder, files = room / "c", tmp_path / "files"
    files.mkdir()
    for i in range(8):
        (files / f"f{i:02}.txt").write_text(text(i))
    make(folder, embedder, 1)
    fill(room.parent, ROOM)
    line = one_line(cli("index", files, "--name", folder, ray=ray_local), folder)
    assert "nothing of this write was stored" in line
    free(room.parent)
