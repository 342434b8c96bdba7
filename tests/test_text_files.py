"""Files of a type with no reader (source code, logs, a file with no extension) are read as
plain text when the user asks for them: named in PATHS, or matched by a --glob. A walk
without --glob takes the known types only and says how to read the rest; it never enters
a collection (a collections home inside the folder indexed). Real model, real files; Ray
for `index --ray`."""
import os

from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection, plan_files
from semsearch.loaders import Skipped, list_files
from semsearch.watch import watch_files

from test_cli import assert_one_line_error
from test_watch import Script  # the watch scripted between two polls: no sleeps

BINARY = b"\x00\x01\x02\x03 compiled \x00\xff" * 20
FILES = {
    "src/invoice.py": 'def totals(rows):\n    """Add up the amounts owed on every invoice of a customer."""\n'
                      "    return sum(row.amount for row in rows)\n",
    "src/weather.py": 'def forecast(city):\n    """Predict tomorrow\'s rain and temperature for a city."""\n'
                      "    return model.predict(city)\n",
    "src/compiled.py": BINARY,  # a text-like extension, binary bytes
    "web/app.js": "function greet(name) { return 'hello ' + name; }\n",
    "logs/server.log": "2026-01-01 12:00:00 ERROR the disk holding the database is full\n",
    "Makefile": "all:\n\tpython -m build\n",
    "notes.md": "# Gardening\n\nTomatoes need sun, water and a stake to climb.\n",
    "tool.dat": BINARY,
}
UNTAKEN = ["Makefile", "logs/server.log", "src/compiled.py", "src/invoice.py", "src/weather.py", "tool.dat",
           "web/app.js"]


def tree(root):
    for rel, content in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def types(name, root):
    """relative path -> type of the collection's documents."""
    with Collection.open(name) as coll:
        return {os.path.relpath(d.source, root): d.metadata["type"] for d in coll.documents(text=False)}


def test_a_walk_without_glob_takes_the_known_types_says_how_to_read_the_rest_and_not_the_collections(home, tmp_path):
    """`index . --name t` with the collections home in `.`: the store, its -wal and -shm,
    the lock and the index file were listed as skipped, every run."""
    root = tree(tmp_path)
    assert home.parent == root  # the collections' home is inside the folder indexed
    for _ in range(2):  # the second run walks past the collection the first one made
        out = ok(run("index", root, "--name", "t")).stdout.splitlines()
    assert "added 0, updated 0, unchanged 1, removed 0, skipped 7;" in out[0]
    assert out[1:] == ["  skipped 7: unsupported type (.py 3, (no extension) 1, .dat 1, .js 1, .log 1): "
                       "--glob '*.py' reads them as text (a --glob takes only what it matches)"]
    plan = plan_files("t", [root])
    assert sorted(os.path.relpath(s, root) for s, _ in plan.skipped) == UNTAKEN
    assert {r for _, r in plan.skipped} == {"unsupported type .py", "unsupported type .js", "unsupported type .log",
                                            "unsupported type .dat", "unsupported type (no extension)"}
    assert types("t", root) == {"notes.md": "md"}


def test_a_glob_reads_source_files_as_text_searchable_by_their_docstrings(home, tmp_path, embedder):
    root = tree(tmp_path)
    with Collection.create("code", embedder=embedder) as coll:
        report = coll.add_files([root], glob=["*.py", "*.md"])
        assert report.skipped == [(str(root / "src/compiled.py"), "binary file")]
        hits = coll.search("adding up what a customer owes", k=1, where={"type": "py"}, mode="dense")
        assert hits[0].source == str(root / "src/invoice.py")
        hits = coll.search("will it rain tomorrow", k=1, where={"type": "py"}, mode="dense")
        assert hits[0].source == str(root / "src/weather.py")
        # a run without --glob does not take them, so it does not remove them either
        report = coll.add_files([root])
        assert (report.removed, report.unchanged) == (0, 1)
    assert types("code", root) == {"notes.md": "md", "src/invoice.py": "py", "src/weather.py": "py"}


def test_files_named_are_read_as_text_and_a_binary_one_is_skipped(home, tmp_path, embedder):
    root = tree(tmp_path)
    with Collection.create("named", embedder=embedder) as coll:
        report = coll.add_files([root / "logs/server.log", root / "Makefile", root / "tool.dat", root / "web/app.js"])
        assert report.skipped == [(str(root / "tool.dat"), "binary file")]
        hit, = coll.search("no space left for the database", k=1, mode="dense")
        assert hit.source == str(root / "logs/server.log") and hit.metadata["type"] == "log"
    assert types("named", root) == {"logs/server.log": "log", "Makefile": "text", "web/app.js": "js"}
    listed = list_files([root / "src", root / "src/invoice.py"])  # named too, after its folder: taken
    assert str(root / "src/invoice.py") in listed and Skipped(str(root / "src/weather.py"), "unsupported type .py") in listed


def test_a_collection_named_as_a_path_to_index_is_a_one_line_error(home, tmp_path):
    root = tree(tmp_path)
    ok(run("index", root / "notes.md", "--name", "t"))
    assert_one_line_error(run("index", home / "t", "--name", "u"), code=2, match="is a semsearch collection")
    assert not (home / "u").exists()


def test_the_dry_run_plans_what_the_run_does(home, tmp_path, embedder):
    root = tree(tmp_path)
    for glob in ([], ["*.py", "*.md", "Makefile"]):
        name = f"plan{len(glob)}"
        plan = plan_files(name, [root], glob=glob)
        with Collection.create(name, embedder=embedder) as coll:
            report = coll.add_files([root], glob=glob)
            assert sorted(plan.new) == sorted(d.id for d in coll.documents(text=False))
        assert sorted(plan.skipped) == sorted(report.skipped) and report.added == len(plan.new)
    assert types("plan3", root) == {"notes.md": "md", "src/invoice.py": "py", "src/weather.py": "py",
                                    "Makefile": "text"}


def test_a_watch_with_a_glob_syncs_an_edited_source_file(home, tmp_path, embedder):
    """Its poll stamped every file of a type with no reader as "there": an edit of one was
    never seen."""
    root = tree(tmp_path)
    passes = []

    def edit():
        assert [p.report.added for p in passes] == [2]
        (root / "src/invoice.py").write_text('def totals(rows):\n    """Send a reminder to late payers."""\n')
        (root / "src/new.js").write_text("// not matched by the glob: not read\n")

    def edited():
        assert [(p.report.added, p.report.updated) for p in passes[1:]] == [(0, 1)]

    watch_files("code", [root], every=0.01, glob="*.py", stop=Script(edit, edited), on_pass=passes.append,
                embedder=embedder)
    with Collection.open("code") as coll:
        assert "late payers" in coll.get(str(root / "src/invoice.py")).text
        assert coll.count() == 2


def test_a_watch_without_glob_says_a_new_source_file_skipped_and_does_not_read_it(home, tmp_path, embedder):
    """A changed file is read by naming it, and a file named is read as text: the watch must
    not name one its walk does not take."""
    root = tree(tmp_path)
    passes = []

    def add():
        (root / "src/new.py").write_text('"""A new module."""\n')

    def said():
        assert passes[-1].new_skips == [(str(root / "src/new.py"), "unsupported type .py")]

    watch_files("notes", [root], every=0.01, stop=Script(add, said), on_pass=passes.append, embedder=embedder)
    assert types("notes", root) == {"notes.md": "md"}


def test_index_on_ray_reads_what_a_glob_asks_for_as_text(tmp_path, home, ray_local):
    from semsearch.distributed import index_paths
    root = tree(tmp_path)
    with Collection.create("local") as local, Collection.create("onray") as onray:
        r_local, r_ray = local.add_files([root], glob="*.py"), index_paths(onray, [root], glob="*.py")
        assert (r_ray.added, r_ray.skipped) == (r_local.added, r_local.skipped) == \
            (2, [(str(root / "src/compiled.py"), "binary file")])
    assert types("onray", root) == types("local", root) == {"src/invoice.py": "py", "src/weather.py": "py"}


CODE = "\n\n".join(f'def step_{i}(rows, limit={i}):\n    """Keep the rows of batch {i} under the limit and add them up."""\n'
                   f"    kept = [row for row in rows if row.amount < limit]\n    return sum(row.amount for row in kept)\n"
                   for i in range(12))


def test_code_is_cut_into_chunks_at_line_breaks_and_prose_as_before(home, tmp_path, embedder):
    """Chunks of code ended wherever the token budget ran out, mid-statement; now a file read
    as text ends its chunks at a line start (after a blank line first). The same text as a
    .txt is prose: its chunks are what they were (chunking's default)."""
    from semsearch.chunking import chunk_documents, iter_chunks
    (tmp_path / "steps.py").write_text(CODE)
    (tmp_path / "steps.txt").write_text(CODE)
    with Collection.create("code", embedder=embedder, chunk_tokens=64, overlap=8) as coll:
        coll.add_files([tmp_path], glob=["*.py", "*.txt"])
        as_code = coll.store.chunks_of(str(tmp_path / "steps.py"))
        as_prose = coll.store.chunks_of(str(tmp_path / "steps.txt"))
    assert len(as_code) > 5 and all(CODE[start:end] == text for start, end, text, _ in as_code)
    assert all(CODE[end:].startswith("\n") for _, end, _, _ in as_code[:-1])
    tok = embedder.tokenizer
    assert any(CODE[end:end + 2] == "\n\n" for _, end, _, _ in as_code)
    for _, end, text, _ in as_code[:-1]:  # a blank line in its last half, if any, is where it ends
        if CODE[end:end + 2] != "\n\n":
            assert "\n\n" not in text[tok.encode(text, add_special_tokens=False).offsets[32][1]:]
    assert [c[:3] for c in as_prose] == [(c.start, c.end, c.text) for c in iter_chunks([CODE], tok, 64, 8)]
    assert any(not CODE[end:].startswith("\n") for _, end, _, _ in as_prose[:-1])  # mid-line: as before
    docs = [[CODE[:700], CODE[700:]], [CODE]]
    assert chunk_documents(docs, tok, 64, 8, [True, False]) == \
        [list(iter_chunks(docs[0], tok, 64, 8, lines=True)), list(iter_chunks(docs[1], tok, 64, 8))]
