"""A file's document is named the way a shell user names the file: `get` and `similar` take
a relative path, a ~ path or one through a link, as well as the absolute path stored as its id."""
import json
import os

from test_cli import assert_one_line_error, ok, run


def test_get_and_similar_take_a_file_as_the_shell_names_it(home, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "plan.md").write_text("The roadmap plan lists the launch dates for the new product.")
    (docs / "cats.md").write_text("Cats purr and chase mice around the garden all afternoon.")
    ok(run("index", docs, "--name", "notes"))
    ok(run("add", "notes", "--text", "a text whose id looks like a file name", "--id", "cats.md"))
    plan = str(docs / "plan.md")
    os.symlink(docs, tmp_path / "link")
    monkeypatch.chdir(tmp_path / "link")  # the file named through a link: its id is the real path
    monkeypatch.setenv("HOME", str(tmp_path))
    for spelled in ("plan.md", "./plan.md", "../docs/plan.md", "~/docs/plan.md", plan):
        got = json.loads(ok(run("get", "notes", spelled, "--json")).stdout)
        assert got["id"] == plan, spelled
    hits = json.loads(ok(run("similar", "notes", "plan.md", "--json")).stdout)
    assert plan not in [h["id"] for h in hits] and len(hits) == 2
    # an id held as given wins over the file of that name; a missing one is named as typed
    assert json.loads(ok(run("get", "notes", "cats.md", "--json")).stdout)["source"] is None
    assert_one_line_error(run("get", "notes", "gone.md"), 3, "'gone.md'")
    assert_one_line_error(run("similar", "notes", "gone.md"), 3, "gone.md")
