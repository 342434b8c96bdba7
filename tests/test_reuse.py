"""A moved, renamed or copied file is not embedded again (real model, real store).

Its document gets the chunks and vectors of the document the collection holds with the
same text (content hash and loader type). What was embedded is seen by wrapping the real
Embedder (test_add_unchanged.Counting: it records every passage it is asked to embed).
"""
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

from semsearch.collection import STORE_FILE, Collection
from semsearch.ingest import info_of
from semsearch.loaders import load_file
from semsearch.watch import watch_files

from test_add_unchanged import Counting, embedded
from test_cli import ok, run
from test_watch import Script

FILES = {
    "cats.txt": "Cats are small furry pets that purr, chase mice and sleep most of the day. " * 8,
    "rockets.md": "---\ntitle: Launch day\ntags: [space]\n---\n"
                  "The rocket launch carried a satellite into orbit around the Earth.\n",
    "sub/bread.txt": "Knead the dough, let it rise overnight, then bake the loaf in a hot oven.\n",
}
RECORDS = [{"id": "g1", "text": "She tuned the strings of her acoustic guitar before the concert began."},
           {"id": "s1", "text": "Shares on the stock exchange fell sharply after the interest rate decision.",
            "year": 2020}]


def write_notes(folder):
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "music.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return folder


def keys_of(folder) -> list[str]:
    return sorted([str(folder / name) for name in FILES]
                  + [f"{folder / 'music.jsonl'}#{r['id']}" for r in RECORDS])


def rows(coll, key) -> list[tuple]:
    """(position, start, end, text, vector) of a document's chunks, read by a connection of its own."""
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        got = db.execute("SELECT c.position, c.start, c.end, c.text, c.vector FROM chunks c JOIN documents d "
                         "ON d.id = c.doc_id WHERE d.key = ? ORDER BY c.position", (key,)).fetchall()
    return [(*r[:4], np.frombuffer(r[4], np.float32)) for r in got]


def same_rows(a, b, exact=True) -> bool:
    if [r[:4] for r in a] != [r[:4] for r in b] or not a:
        return False
    va, vb = np.stack([r[4] for r in a]), np.stack([r[4] for r in b])
    return np.array_equal(va, vb) if exact else np.allclose(va, vb, atol=1e-5)


@pytest.fixture
def coll(home, embedder):
    with Collection.create("c", embedder=Counting(embedder), chunk_tokens=16, overlap=4) as c:
        yield c


@pytest.fixture
def base(tmp_path):
    (tmp_path / "base" / "notes").mkdir(parents=True)
    write_notes(tmp_path / "base" / "notes")
    return tmp_path / "base"


def test_a_moved_folder_is_reused_whole_and_found_under_its_new_ids(coll, base):
    old, new = base / "notes", base / "archive" / "notes 2026"
    first = coll.add_files([base])
    assert first.added == 5 and first.reused == 0 and embedded(coll)
    before = {key: rows(coll, key) for key in keys_of(old)}
    assert all(len(r) > 0 for r in before.values()) and len(before[str(old / "cats.txt")]) > 1

    new.parent.mkdir()
    os.rename(old, new)
    report = coll.add_files([base])
    assert embedded(coll) == []  # nothing embedded: the model was not asked for one passage
    assert (report.added, report.reused, report.updated, report.unchanged, report.removed) == (5, 5, 0, 0, 5)
    assert report.chunks == sum(map(len, before.values()))
    assert sorted(coll.store.document_hashes()) == keys_of(new)  # the old ids are gone
    for key, was in before.items():
        assert same_rows(rows(coll, key.replace(str(old), str(new))), was)
    moved = coll.get(str(new / "rockets.md"))
    assert moved.metadata["path"] == str(new / "rockets.md") and moved.metadata["title"] == "Launch day"
    assert moved.source == str(new / "rockets.md")
    assert coll.get(f"{new / 'music.jsonl'}#s1").metadata["year"] == 2020
    assert coll.search("a spacecraft going into orbit", k=1)[0].id == str(new / "rockets.md")
    assert coll.search("musical instrument", k=1)[0].id == f"{new / 'music.jsonl'}#g1"
    assert coll.search("furry pets", k=1, mode="lexical")[0].id == str(new / "cats.txt")


def test_reused_chunks_and_vectors_are_those_a_fresh_embed_gives(coll, base, home, embedder):
    coll.add_files([base])
    os.rename(base / "notes", base / "moved")
    assert coll.add_files([base]).reused == 5
    with Collection.create("fresh", embedder=embedder, chunk_tokens=16, overlap=4) as fresh:
        fresh.add_files([base / "moved"])
        for key in keys_of(base / "moved"):
            assert same_rows(rows(coll, key), rows(fresh, key), exact=False), key


def test_a_copy_gives_two_documents_with_equal_vectors(coll, base):
    notes = base / "notes"
    coll.add_files([base])
    embedded(coll)
    shutil.copyfile(notes / "cats.txt", notes / "cats (1).txt")
    shutil.copyfile(notes / "music.jsonl", notes / "music copy.jsonl")
    report = coll.add_files([base])
    assert (report.added, report.reused, report.unchanged, report.removed) == (3, 3, 5, 0)
    assert embedded(coll) == []
    assert coll.count() == 8
    assert same_rows(rows(coll, str(notes / "cats (1).txt")), rows(coll, str(notes / "cats.txt")))
    assert same_rows(rows(coll, f"{notes / 'music copy.jsonl'}#g1"), rows(coll, f"{notes / 'music.jsonl'}#g1"))
    assert coll.get(str(notes / "cats (1).txt")).metadata["path"] == str(notes / "cats (1).txt")


def test_the_same_bytes_as_md_and_txt_are_not_reused_across_types(coll, base):
    notes = base / "notes"
    coll.add_files([base])
    embedded(coll)
    shutil.copyfile(notes / "rockets.md", notes / "rockets.txt")  # its front matter is text here
    report = coll.add_files([base])
    assert (report.added, report.reused) == (1, 0)
    assert any("title: Launch day" in p for p in embedded(coll))
    assert "tags:" in coll.get(str(notes / "rockets.txt")).text
    assert "tags:" not in coll.get(str(notes / "rockets.md")).text


def test_a_file_changed_in_a_moved_folder_is_embedded(coll, base):
    coll.add_files([base])
    embedded(coll)
    os.rename(base / "notes", base / "moved")
    (base / "moved" / "sub" / "bread.txt").write_text("Volcanoes erupt molten lava and ash.\n")
    report = coll.add_files([base])
    assert (report.added, report.reused, report.removed) == (5, 4, 5)
    assert [p.strip() for p in embedded(coll)] == ["Volcanoes erupt molten lava and ash."]
    assert coll.search("erupting volcano", k=1)[0].id == str(base / "moved" / "sub" / "bread.txt")


def test_a_record_moved_to_another_file_is_reused_but_a_text_added_directly_is_not(coll, base):
    notes = base / "notes"
    coll.add_files([base])
    embedded(coll)
    with open(notes / "music.jsonl", "a") as f:  # a new record, and the first one again in a new file
        f.write(json.dumps({"id": "v1", "text": "The violin section played the slow movement softly."}) + "\n")
    (notes / "more.json").write_text(json.dumps([RECORDS[0]]))
    report = coll.add_files([base])
    assert (report.added, report.reused, report.unchanged) == (2, 1, 5)
    assert [p.strip() for p in embedded(coll)] == ["The violin section played the slow movement softly."]
    # a text whose UTF-8 is a file's very bytes: its hash is the file's, but not its kind
    coll.add_texts([FILES["sub/bread.txt"]], ids=["bread"])
    assert "".join(embedded(coll)).startswith("Knead the dough")


def test_a_source_deleted_by_another_writer_after_the_run_listed_it_is_embedded(coll, base):
    """Writer.reused reads the store at the lookup: a document another writer deleted since
    the run read the known hashes is not there to copy, and the caller embeds."""
    notes = base / "notes"
    coll.add_files([base])
    shutil.copyfile(notes / "cats.txt", notes / "kittens.txt")
    copy = next(load_file(str(notes / "kittens.txt")))
    with coll.writer(hold=False) as w:
        reuse = w.reuser(w.known_hashes())
        assert reuse(info_of(copy)).chunks  # held now
        assert coll.delete(str(notes / "cats.txt")) == 1  # another writer, after the run listed it
        assert reuse(info_of(copy)) is None
    embedded(coll)
    report = coll.add_files([notes / "kittens.txt"])
    assert (report.added, report.reused) == (1, 0) and embedded(coll)


def test_index_says_how_many_documents_it_reused(home, tmp_path):
    (tmp_path / "docs" / "notes").mkdir(parents=True)
    notes = write_notes(tmp_path / "docs" / "notes")
    ok(run("index", tmp_path / "docs", "--name", "n"))
    os.rename(notes, tmp_path / "docs" / "moved")
    said = ok(run("index", tmp_path / "docs", "--name", "n")).stdout
    assert "n: added 5, updated 0, unchanged 0, removed 5, skipped 0; 5 reused (moved or copied: " \
           "not embedded);" in said, said


def test_a_watch_pass_reuses_a_folder_moved_under_it(home, base, embedder):
    counting, passes = Counting(embedder), []

    def move():
        assert len(passes) == 1 and passes[0].report.added == 5
        counting.passages.clear()
        os.rename(base / "notes", base / "moved")

    def moved():
        report = passes[1].report
        assert (len(passes), report.added, report.reused, report.removed) == (2, 5, 5, 5)
        assert counting.passages == []

    watch_files("w", [base], every=0.01, on_pass=passes.append, embedder=counting,
                stop=Script(lambda: None, move, moved))
    with Collection.open("w") as coll:
        assert sorted(coll.store.document_hashes()) == keys_of(base / "moved")


def test_a_folder_moved_and_indexed_at_its_new_place_says_what_it_left_behind(coll, tmp_path, base):
    """Indexing only the new place reuses the vectors but cannot see the old place: the run
    says so, and `delete --missing` removes the old documents (only those whose files are gone)."""
    old, new = base / "notes", tmp_path / "moved"
    coll.add_files([old])
    (tmp_path / "kept.txt").write_text("A file indexed on its own that is still there.")
    coll.add_files([tmp_path / "kept.txt"])
    os.rename(old, new)
    report = coll.add_files([new])
    assert (report.added, report.reused, report.removed, report.left_behind) == (5, 5, 0, 5)
    assert coll.add_files([new]).left_behind == 0  # nothing reused this time: nothing said
    assert coll.count() == 11
    assert coll.delete_missing(new) == 0  # under the new place: all there
    assert coll.delete_missing([old / "sub", tmp_path / "kept.txt"]) == 1  # the old place's sub/bread.txt
    assert coll.delete_missing() == 4
    assert sorted(k for k, _ in coll.store.documents_under("/")) == sorted(keys_of(new) + [str(tmp_path / "kept.txt")])
    assert coll.delete_missing() == 0


def test_delete_missing_from_the_command_line(home, tmp_path, base):
    old, new = base / "notes", tmp_path / "moved"
    ok(run("index", old, "--name", "notes"))
    os.rename(old, new)
    out = ok(run("index", new, "--name", "notes")).output
    assert "5 reused" in out and "note: 5 document(s) whose files were moved here are still" in out
    assert "semsearch delete notes --missing" in out
    assert "deleted 0 document(s) whose files are gone; 10 left" in ok(
        run("delete", "notes", "--missing", "--path", new)).output
    assert "deleted 5 document(s) whose files are gone; 5 left" in ok(run("delete", "notes", "--missing")).output
    for bad in (["--missing", "--id", "x"], ["--missing", "--where", "year=2020"]):
        result = run("delete", "notes", *bad)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_index_on_ray_reuses_moved_files_and_embeds_on_the_driver_what_it_cannot_copy(coll, base, ray_local):
    """The actors send a document whose hash the collection holds back unembedded; the
    driver copies the holder's rows, or embeds it itself (the driver's model is the one
    counted here) where the holder has the same bytes read as another type."""
    from semsearch.distributed import index_paths
    coll.add_files([base])
    before = {key: rows(coll, key) for key in keys_of(base / "notes")}
    embedded(coll)
    os.rename(base / "notes", base / "moved")
    shutil.copyfile(base / "moved" / "rockets.md", base / "moved" / "rockets.txt")  # its front matter is text
    report = index_paths(coll, [base], actors=1)
    assert (report.added, report.reused, report.updated, report.unchanged, report.removed) == (6, 5, 0, 0, 5)
    assert any("title: Launch day" in p for p in embedded(coll))  # rockets.txt, on the driver; nothing else
    assert embedded(coll) == []
    for key, was in before.items():
        assert same_rows(rows(coll, key.replace(str(base / "notes"), str(base / "moved"))), was)
    assert "tags:" in coll.get(str(base / "moved" / "rockets.txt")).text
    assert report.chunks == sum(map(len, before.values())) + len(rows(coll, str(base / "moved" / "rockets.txt")))
