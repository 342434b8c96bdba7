"""`index --dry-run` (collection.plan_files): what a run would do, none of it done. The oracle
is the real run right after it, on the same files: it must do exactly what the plan said."""
import json
import os
import subprocess
import sys

import pytest

from semsearch.collection import STORE_FILE, Collection, index_files, plan_files
from semsearch.errors import CollectionExists

from test_cli import assert_one_line_error, ok, run


def write(folder, files: dict):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


NOTES = {"a.txt": "Cats purr and sleep most of the day.",
         "sub/b.md": "---\ntitle: Launch\n---\nThe rocket carried a satellite into orbit.",
         "sub/c.txt": "Knead the dough and bake the loaf.",
         "vendor/x.md": "A vendored readme.",
         "music.jsonl": json.dumps({"id": "g1", "text": "She tuned her guitar."}) + "\n"
                        + json.dumps({"id": "s1", "text": "Shares fell sharply."}) + "\n",
         "blob.txt": "\x00\x01 binary"}


def state(name):
    """Everything a run could change: ids, texts, metadata and the store's generation."""
    with Collection.open(name) as coll:
        with coll.store.snapshot():
            generation = coll.store.generation()
        return generation, {d.id: (d.text, d.metadata) for d in coll.documents()}


def test_a_plan_is_what_the_run_then_does(home, tmp_path, embedder):
    notes = tmp_path / "notes"
    write(notes, NOTES)
    plan = plan_files("notes", [notes], exclude="vendor")
    assert not plan.exists and not home.exists()  # nothing made
    assert sorted(plan.new) == sorted([str(notes / n) for n in ("a.txt", "sub/b.md", "sub/c.txt")]
                                      + [f"{notes / 'music.jsonl'}#{i}" for i in ("g1", "s1")])
    assert (plan.changed, plan.removed, plan.reused, plan.unchanged) == ([], [], [], 0)
    assert plan.skipped == [(str(notes / "blob.txt"), "binary file")]
    index_files("notes", [notes], exclude="vendor", embedder=embedder)

    os.rename(notes / "sub", notes / "moved")  # b.md and c.txt move: reused, the old ids removed
    (notes / "a.txt").write_text("Cats chase mice at night.")  # changed
    (notes / "d.txt").write_text("Tomatoes need sun and water.")  # new
    (notes / "music.jsonl").write_text(json.dumps({"id": "g1", "text": "She tuned her guitar."}) + "\n")
    before = state("notes")
    plan = plan_files("notes", [notes], exclude="vendor")
    assert state("notes") == before  # nothing written
    assert plan.exists and plan.unchanged == 1 and plan.changed == [str(notes / "a.txt")]
    assert sorted(plan.new) == sorted(str(notes / n) for n in ("d.txt", "moved/b.md", "moved/c.txt"))
    assert sorted(plan.reused) == sorted(str(notes / n) for n in ("moved/b.md", "moved/c.txt"))
    assert plan.removed == sorted([f"{notes / 'music.jsonl'}#s1", str(notes / "sub/b.md"), str(notes / "sub/c.txt")])

    _, report = index_files("notes", [notes], exclude="vendor", embedder=embedder)
    assert (report.added, report.updated, report.removed, report.reused, report.unchanged) == \
        (len(plan.new), len(plan.changed), len(plan.removed), len(plan.reused), plan.unchanged)
    assert sorted(report.skipped) == sorted(plan.skipped)
    _, docs = state("notes")
    assert set(docs) >= set(plan.new) | set(plan.changed) and not set(docs) & set(plan.removed)
    assert plan_files("notes", [notes], exclude="vendor").new == []  # and now nothing to do


def test_a_plan_checks_settings_as_a_run_does(home, tmp_path, embedder):
    write(tmp_path / "n", {"a.txt": "Cats purr."})
    index_files("notes", [tmp_path / "n"], embedder=embedder)
    with pytest.raises(CollectionExists, match="chunk_tokens"):
        plan_files("notes", [tmp_path / "n"], chunk_tokens=100)
    assert plan_files("notes", [tmp_path / "n"], chunk_tokens=254).unchanged == 1


def test_the_dry_run_command_loads_no_model_and_writes_nothing(home, tmp_path, embedder):
    notes = tmp_path / "notes"
    write(notes, NOTES)
    code = ("import sys; from semsearch.cli import main; sys.argv = ['semsearch', 'index', sys.argv[1], "
            "'--name', 'notes', '--dry-run', '--exclude', 'vendor']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('onnxruntime' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(notes)], capture_output=True, text=True,
                         env={**os.environ, "SEMSEARCH_HOME": str(home)}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("notes (dry run, nothing written): would add 5, update 0, remove 0; unchanged 0, "
                        "skipped 1; the collection would be created")
    assert sorted(lines[1:6]) == sorted(f"+ {k}" for k in [str(notes / "a.txt"), str(notes / "sub/b.md"),
                                                          str(notes / "sub/c.txt"), f"{notes / 'music.jsonl'}#g1",
                                                          f"{notes / 'music.jsonl'}#s1"])
    assert lines[6:] == [f"  skipped {notes / 'blob.txt'}: binary file", "False False"]
    assert not (home / "notes" / STORE_FILE).exists()
    assert_one_line_error(run("index", notes, "--name", "notes", "--dry-run", "--watch"), 2, "--dry-run")
    ok(run("index", notes, "--name", "notes"))
    os.rename(notes / "sub", notes / "moved")
    out = ok(run("index", notes, "--name", "notes", "--dry-run", "--exclude", "vendor")).output.splitlines()
    assert out[0].startswith("notes (dry run, nothing written): would add 2, update 0, remove 2; unchanged 3, "
                             "skipped 1; 2 of those added or updated reused")
    assert f"+ {notes / 'moved/b.md'}  (reused)" in out and f"- {notes / 'sub/b.md'}" in out
    # --ray reuses them too: the same plan
    assert ok(run("index", notes, "--name", "notes", "--dry-run", "--exclude", "vendor", "--ray")).output.splitlines() == out
