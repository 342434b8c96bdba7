"""A full disk, for real: a small tmpfs mounted for this module (root only; under CI a
failure, never a skip), filled to a chosen point by a filler file. A write that does not
fit fails in one line (OutOfSpace: exit 74, HTTP 507), stores nothing, and once the filler
is removed the same collection takes writes again."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from semsearch import errors
from semsearch.collection import OWN_FILES, Collection, list_collections
from test_cli import assert_one_line_error, ok, run
from test_server import drive, error_of

SIZE = 4 << 20  # the tmpfs
ROOM = 40 << 10  # SQLite's -shm file (32 KiB) fits; a write's log does not
WORDS = ("river mountain cloud forest harbour lantern meadow copper violin glacier orchard "
         "thunder compass pebble saffron quartz walnut falcon canyon ember").split()


def text(i: int, words: int = 120) -> str:
    return " ".join(WORDS[(i * 7 + j * j) % len(WORDS)] for j in range(words)) + f" number {i}"


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A tmpfs of SIZE bytes, unmounted however the module ends."""
    mount = tmp_path_factory.mktemp("tmpfs")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        why = f"cannot mount a tmpfs ({getattr(exc, 'stderr', None) or exc}): these tests need root"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mount
    finally:  # lazily if busy (a failed test's open file): never left mounted
        if subprocess.run(["umount", str(mount)]).returncode:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture
def room(disk):
    """A fresh folder on the tmpfs; the filler and the folder are removed after the test."""
    folder = disk / uuid.uuid4().hex[:8]
    folder.mkdir()
    yield folder
    free(disk)
    shutil.rmtree(folder)


def fill(disk, left: int) -> None:
    """Leave about ``left`` bytes free on the tmpfs (and never write anywhere else)."""
    assert os.path.ismount(disk)
    st = os.statvfs(disk)
    assert st.f_blocks * st.f_frsize <= SIZE, "not the test's tmpfs"
    free(disk)
    with open(disk / "filler", "wb") as f:
        f.write(bytes(max(0, os.statvfs(disk).f_bavail * st.f_frsize - left)))


def free(disk) -> None:
    (disk / "filler").unlink(missing_ok=True)


def make(folder, embedder, n: int):
    with Collection.create(folder, embedder=embedder) as coll:
        coll.add_texts([text(i) for i in range(n)], ids=[f"d{i}" for i in range(n)])


def counted(folder, embedder) -> tuple[int, list[str]]:
    """(documents, the ids a search for document 3's text finds first)."""
    with Collection.open(folder, embedder=embedder) as coll:
        return coll.count(), [h.id for h in coll.search(text(3), k=1)]


def jsonl(path, ids) -> str:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": text(i)}) + "\n" for i in ids))
    return str(path)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in OWN_FILES)


def full(line: str, folder) -> None:
    assert f"the disk that holds {folder} is full" in line and "free space" in line, line


def test_add_on_a_full_disk_exits_74_in_one_line_stores_nothing_and_works_once_space_is_freed(
        room, embedder, tmp_path):
    folder = room / "c"
    make(folder, embedder, 10)
    batch = jsonl(tmp_path / "more.jsonl", range(10, 30))
    fill(room.parent, ROOM)
    line = assert_one_line_error(run("add", folder, "--jsonl", batch), code=74)
    full(line, folder)
    assert "nothing of this write was stored" in line
    free(room.parent)
    assert counted(folder, embedder) == (10, ["d3"])
    assert leftovers(folder) == []
    ok(run("add", folder, "--jsonl", batch))
    assert counted(folder, embedder)[0] == 30


def test_delete_on_a_full_disk_exits_74_and_deletes_nothing(room, embedder):
    folder = room / "c"
    make(folder, embedder, 10)
    fill(room.parent, ROOM)
    ids = [arg for i in range(10) for arg in ("--id", f"d{i}")]
    full(assert_one_line_error(run("delete", folder, *ids), code=74), folder)
    free(room.parent)
    assert counted(folder, embedder) == (10, ["d3"])
    ok(run("delete", folder, *ids))
    assert counted(folder, embedder)[0] == 0


def test_search_on_a_disk_with_no_room_at_all_says_the_disk_is_full(room, embedder):
    """Even a read needs SQLite's -shm file (32 KiB) once nobody has the collection open:
    it said 'not a readable semsearch store (disk I/O error)', as if the store were corrupt."""
    folder = room / "c"
    make(folder, embedder, 5)
    fill(room.parent, 0)
    full(assert_one_line_error(run("search", folder, "river"), code=74), folder)
    free(room.parent)
    assert counted(folder, embedder) == (5, ["d3"])


def test_add_texts_raises_out_of_space_and_the_collection_takes_writes_once_space_is_freed(room, embedder):
    folder = room / "c"
    make(folder, embedder, 10)
    with Collection.open(folder, embedder=embedder) as coll:  # open: its -shm file is made
        fill(room.parent, 0)
        with pytest.raises(errors.OutOfSpace) as raised:
            coll.add_texts([text(i) for i in range(10, 30)], ids=[f"d{i}" for i in range(10, 30)])
        assert isinstance(raised.value, errors.SemsearchError)
        assert (raised.value.exit_code, raised.value.http_status) == (74, 507)
        assert coll.count() == 10
        free(room.parent)
        coll.add_texts([text(30)], ids=["d30"])
        assert coll.count() == 11
    assert counted(folder, embedder) == (11, ["d3"])


def test_a_new_collection_on_a_full_disk_is_not_made_and_leaves_nothing_behind(room, embedder, tmp_path):
    """At each fill level the create either fails with OutOfSpace, leaving no store and no
    temporary file (only the lock), or makes a whole collection."""
    failed = 0
    for left in range(0, 320 << 10, 16 << 10):
        folder = room / f"new{left}"
        fill(room.parent, left)
        try:
            Collection.create(folder, embedder=embedder).close()
        except errors.OutOfSpace as exc:
            failed += 1
            full(exc.one_line(), folder)
            assert sorted(p.name for p in folder.iterdir()) == ["write.lock"]
            assert folder.name not in list_collections(room)
            continue
        finally:
            free(room.parent)
        assert counted(folder, embedder) == (0, [])
    assert failed
    (tmp_path / "a.txt").write_text(text(0))
    fill(room.parent, 0)
    full(assert_one_line_error(run("index", tmp_path, "--name", room / "cli"), code=74), room / "cli")
    assert sorted(p.name for p in (room / "cli").iterdir()) == ["write.lock"]


def test_index_on_a_full_disk_stops_and_says_how_many_documents_it_stored(room, embedder, tmp_path):
    folder, files = room / "c", tmp_path / "files"
    files.mkdir()
    for i in range(20):
        (files / f"f{i:02}.txt").write_text(text(i))
    make(folder, embedder, 1)
    fill(room.parent, ROOM + (320 << 10))  # room for a few documents (a one-document write logs ~64 KiB)
    line = assert_one_line_error(run("index", files, "--name", folder), code=74)
    full(line, folder)
    free(room.parent)
    stored = counted(folder, embedder)[0] - 1
    assert 0 < stored < 20, stored
    assert f"the {stored} document(s) this run wrote before it are stored" in line
    report = ok(run("index", files, "--name", folder)).output
    assert f"added {20 - stored}, updated 0, unchanged {stored}" in report
    assert counted(folder, embedder)[0] == 21


def test_server_add_on_a_full_disk_is_a_507_in_openais_error_shape(room, embedder):
    make(room / "notes", embedder, 10)
    docs = [{"id": f"d{i}", "text": text(i)} for i in range(10, 30)]

    async def script(client, served):
        assert (await client.get("/v1/collections/notes")).json()["documents"] == 10  # open: -shm made
        fill(room.parent, 0)
        error = error_of(await client.post("/v1/collections/notes/documents", json={"documents": docs}), 507)
        assert error["type"] == "insufficient_storage" and error["code"] == "out_of_space"
        full(error["message"], room / "notes")
        free(room.parent)
        assert (await client.post("/v1/collections/notes/documents", json={"documents": docs})).status_code == 200
        assert (await client.get("/v1/collections/notes")).json()["documents"] == 30

    drive(embedder, room, script, names=("notes",))


def test_a_backup_onto_a_full_disk_exits_74_and_leaves_no_collection(room, embedder, home):
    """The copy does not fit: one line, exit 74, and nothing in its folder that is or looks
    like a collection (its scratch store and index file removed); with room, the same
    backup then completes."""
    make(home / "src", embedder, 30)
    dest = room / "copy"
    fill(room.parent, ROOM)
    line = assert_one_line_error(run("backup", "src", dest), code=74)
    full(line, dest)
    assert "no copy was made" in line
    assert leftovers(dest) == [] and not (dest / "store.sqlite").exists()
    free(room.parent)
    ok(run("backup", "src", dest))
    assert counted(dest, embedder) == (30, ["d3"])


def test_embed_out_onto_a_full_disk_exits_74_in_one_line_and_leaves_no_file(room):
    """A full disk outside any collection (here `embed --out`) is the same exit 74."""
    fill(room.parent, 0)
    line = assert_one_line_error(run("embed", "some text", "--format", "npy", "--out", room / "v.npy"), code=74)
    assert "No space left on device" in line
    free(room.parent)
    assert list(room.iterdir()) == []
