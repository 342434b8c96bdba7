"""A collection keeps what `index` read into it (Collection.sources), so `semsearch index
--name NAME` without PATHS syncs it again, each path with the selection it was indexed with."""
from semsearch.collection import Collection, index_files, source_runs

from test_cli import assert_one_line_error, ok, run


def write(folder, files: dict):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def keys(name="notes"):
    with Collection.open(name) as coll:
        return sorted(d.id for d in coll.documents())


def test_index_without_paths_syncs_every_source_with_its_own_selection(home, tmp_path):
    notes, docs = tmp_path / "notes", tmp_path / "docs"
    write(notes, {"a.md": "Cats purr and sleep most of the day.", "drafts/d.md": "An unfinished draft."})
    write(docs, {"x.txt": "Deploy the service behind a load balancer.", "y.md": "Bake the loaf for an hour."})
    ok(run("index", notes, "--name", "notes", "--exclude", "drafts"))
    ok(run("index", docs, "--name", "notes", "--glob", "*.txt"))
    with Collection.open("notes") as coll:
        assert coll.sources == [
            {"path": str(notes), "glob": [], "exclude": ["drafts"], "gitignore": False},
            {"path": str(docs), "glob": ["*.txt"], "exclude": [], "gitignore": False}]
    assert keys() == [str(docs / "x.txt"), str(notes / "a.md")]

    write(notes, {"b.md": "Tomatoes need sun and water.", "drafts/e.md": "Another draft."})
    write(docs, {"z.txt": "Rotate the signing keys monthly.", "w.md": "Not a .txt file."})
    (docs / "x.txt").unlink()
    result = ok(run("index", "--name", "notes"))
    assert f"notes: indexing {notes} --exclude drafts" in result.stderr
    assert f"notes: indexing {docs} --glob '*.txt'" in result.stderr
    # the drafts and the .md under docs stay out; x.txt's document goes as a vanished file's
    assert keys() == [str(docs / "z.txt"), str(notes / "a.md"), str(notes / "b.md")]
    info = ok(run("info", "notes")).output
    assert f"sources:   {notes} --exclude drafts\n" in info and f"{docs} --glob '*.txt'\n" in info

    plan = ok(run("index", "--name", "notes", "--dry-run")).output  # one plan a selection, nothing to do
    assert plan.count("would add 0, update 0, remove 0") == 2


def test_a_source_indexed_again_takes_the_new_selection_in_its_place(home, tmp_path, embedder):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, {"one.txt": "First folder."})
    write(b, {"two.txt": "Second folder."})
    index_files("notes", [a, b], embedder=embedder)
    index_files("notes", [a], glob="*.md", embedder=embedder)
    index_files("notes", [a], glob="*.md", embedder=embedder)  # the same again: nothing rewritten
    assert source_runs("notes") == [{"paths": [str(a)], "glob": ["*.md"], "exclude": [], "gitignore": False},
                                    {"paths": [str(b)], "glob": [], "exclude": [], "gitignore": False}]
    index_files("notes", [tmp_path / "a"], embedder=embedder)  # back to the first selection: one run again
    assert source_runs("notes") == [{"paths": [str(a), str(b)], "glob": [], "exclude": [], "gitignore": False}]


def test_delete_path_forgets_the_sources_at_or_under_it(home, tmp_path):
    write(tmp_path / "notes", {"a.txt": "Cats purr.", "sub/b.txt": "Dogs bark."})
    write(tmp_path / "docs", {"c.txt": "Birds sing."})
    ok(run("index", tmp_path / "notes", tmp_path / "docs", "--name", "notes"))
    ok(run("index", tmp_path / "notes" / "sub", "--name", "notes", "--glob", "*.txt"))
    ok(run("delete", "notes", "--path", tmp_path / "notes"))
    with Collection.open("notes") as coll:
        assert [s["path"] for s in coll.sources] == [str(tmp_path / "docs")]
    write(tmp_path / "notes", {"new.txt": "Fish swim."})
    ok(run("index", "--name", "notes"))  # the deleted folder is not read again
    assert keys() == [str(tmp_path / "docs" / "c.txt")]


def test_what_cannot_be_synced_again_is_a_one_line_error(home, tmp_path):
    assert_one_line_error(run("index", "--name", "nothing"), 2, "Missing argument 'PATHS...'")
    ok(run("add", "notes", "--text", "a note added by hand"))
    assert_one_line_error(run("index", "--name", "notes"), 2, "collection notes has no sources")
    write(tmp_path / "a", {"x.txt": "Ants."})
    write(tmp_path / "b", {"y.txt": "Bees."})
    ok(run("index", tmp_path / "a", "--name", "notes"))
    assert_one_line_error(run("index", "--name", "notes", "--glob", "*.md"), 2, "without PATHS each source")
    ok(run("index", tmp_path / "b", "--name", "notes", "--exclude", "*.log"))
    assert_one_line_error(run("index", "--name", "notes", "--watch"), 2, "2 different selections")
    (tmp_path / "a" / "x.txt").unlink()
    (tmp_path / "a").rmdir()  # a source gone (an unmounted share): said, its documents kept
    write(tmp_path / "b", {"z.txt": "Wasps."})
    result = ok(run("index", "--name", "notes"))
    assert f"warning: source {tmp_path / 'a'} is gone, its documents kept" in result.stderr
    assert [k for k in keys() if k.startswith("/")] == [str(tmp_path / n) for n in ("a/x.txt", "b/y.txt", "b/z.txt")]
    (tmp_path / "b" / "y.txt").unlink()
    (tmp_path / "b" / "z.txt").unlink()
    (tmp_path / "b").rmdir()
    assert_one_line_error(run("index", "--name", "notes"), 3, "every source of notes is gone")
