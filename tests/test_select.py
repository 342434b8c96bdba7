"""Which files an `index` run takes: --glob (one or several) and --exclude (loaders.Selection),
the same rule for the walk, a watch's poll and the removal of vanished documents."""
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import InvalidInput
from semsearch.loaders import Selection, Skipped, file_stamps, iter_documents

FILES = {
    "notes/plan.md": "The launch plan: rockets, fuel and a countdown.",
    "notes/todo.txt": "Buy bread, feed the cats, water the plants.",
    "notes/drafts/idea.md": "An unfinished idea about kites and wind.",
    "notes/drafts/keep.txt": "A draft kept as text about sailing boats.",
    "notes/node_modules/pkg/README.md": "Install this package with npm install.",
    "notes/sub/node_modules/deep.md": "A second vendored readme, deeper down.",
    "notes/build/out.txt": "Generated output of the build step.",
    "notes/build.md": "How the build works: make, then test.",
    "notes/server.log.txt": "GET /index 200 in 3 ms",
}


def tree(tmp_path) -> Path:
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path / "notes"


def taken(root, **select) -> list[str]:
    docs = list(iter_documents([root], **select))
    assert not [d for d in docs if isinstance(d, Skipped)], docs
    return sorted(os.path.relpath(d.key, root) for d in docs)


ALL = sorted(os.path.relpath(rel, "notes") for rel in FILES)


@pytest.mark.parametrize("select, left_out", [
    ({"exclude": "node_modules"}, ["node_modules/pkg/README.md", "sub/node_modules/deep.md"]),
    ({"exclude": ["node_modules", "*.log.txt"]},
     ["node_modules/pkg/README.md", "server.log.txt", "sub/node_modules/deep.md"]),
    ({"exclude": "build/"}, ["build/out.txt"]),  # the folder only: build.md stays
    ({"exclude": "build*"}, ["build.md", "build/out.txt"]),
    ({"exclude": "drafts/*.md"}, ["drafts/idea.md"]),  # a path under the folder
    ({"exclude": "**/node_modules"}, ["node_modules/pkg/README.md", "sub/node_modules/deep.md"]),
    ({"exclude": "sub/node_modules"}, ["sub/node_modules/deep.md"]),
    ({"exclude": "/node_modules"}, ["node_modules/pkg/README.md"]),  # anchored at the folder, as in .gitignore
    ({"glob": ["*.md", "drafts/*"], "exclude": "node_modules"},
     ["node_modules/pkg/README.md", "server.log.txt", "sub/node_modules/deep.md", "todo.txt", "build/out.txt"]),
])
def test_globs_and_excludes_select_files_in_folders(tmp_path, select, left_out):
    root = tree(tmp_path)
    assert taken(root, **select) == sorted(set(ALL) - set(left_out))
    sel = Selection.of(select.get("glob"), select.get("exclude"))  # the removal's question, file by file
    assert sorted(rel for rel in ALL if sel.selects(str(root / rel), str(root))) == taken(root, **select)


def test_an_absolute_exclude_and_a_file_named_itself(tmp_path):
    root = tree(tmp_path)
    assert "drafts/idea.md" not in taken(root, exclude=str(root / "drafts"))
    assert taken(root, exclude=str(root / "drafts")) == sorted(set(ALL) - {"drafts/idea.md", "drafts/keep.txt"})
    # a file named in PATHS is taken whatever the patterns say, as with --glob
    named = root / "drafts" / "idea.md"
    assert [d.key for d in iter_documents([named], exclude="drafts")] == [str(named)]


def test_an_excluded_folder_is_not_walked(tmp_path):
    """A symlink loop inside node_modules is a skip when walked, nothing when left out."""
    root = tree(tmp_path)
    os.symlink("..", root / "node_modules" / "pkg" / "up")
    walked = [d for d in iter_documents([root]) if isinstance(d, Skipped)]
    assert [d.reason for d in walked] == ["folder already walked (a symlink loop?)"]
    assert taken(root, exclude="node_modules") == sorted(
        set(ALL) - {"node_modules/pkg/README.md", "sub/node_modules/deep.md"})
    # a watch's poll stats what the walk takes, and nothing under an excluded folder
    polled = {os.path.relpath(s[0], root) for s in file_stamps([root], Selection.of(exclude="node_modules"))}
    assert polled == set(ALL) - {"node_modules/pkg/README.md", "sub/node_modules/deep.md"}


@pytest.mark.parametrize("select, problem", [
    ({"exclude": ""}, "exclude is empty"),
    ({"exclude": ["node_modules", " "]}, "exclude[1] is empty"),
    ({"exclude": 5}, "exclude must be a pattern or a list of patterns, not int"),
    ({"glob": [5]}, "glob must be a string, not int"),
    ({"exclude": "\ud800"}, "exclude holds a lone surrogate"),
])
def test_patterns_that_are_not_patterns_are_invalid_input(tmp_path, select, problem):
    with pytest.raises(InvalidInput, match=problem.replace("[", r"\[").replace("]", r"\]")):
        list(iter_documents([tree(tmp_path)], **select))


def test_reindexing_with_an_exclude_neither_adds_nor_removes_what_it_leaves_out(home, tmp_path):
    root = tree(tmp_path)
    with Collection.create("c", chunk_tokens=32, overlap=8) as coll:
        report = coll.add_files([root], exclude=["node_modules", "drafts/"])
        assert report.added == len(FILES) - 4
        (root / "drafts" / "later.md").write_text("A new draft about gliders.")
        assert coll.add_files([root], exclude="node_modules").added == 3  # the drafts now
        (root / "drafts" / "idea.md").unlink()  # vanished, but left out by this run: stays
        (root / "todo.txt").unlink()  # vanished and selected: removed
        report = coll.add_files([root], exclude=["drafts", "node_modules"])
        assert (report.added, report.removed) == (0, 1)
        keys = {os.path.relpath(k, root) for k, _ in coll.store.documents_under(str(root))}
        assert keys == set(ALL) - {"node_modules/pkg/README.md", "sub/node_modules/deep.md", "todo.txt"} \
            | {"drafts/later.md"}
        # the next run that selects drafts/ again sees idea.md gone
        assert coll.add_files([root], exclude="node_modules").removed == 1


def test_the_cli_takes_several_globs_and_excludes(home, tmp_path):
    root = tree(tmp_path)
    result = CliRunner().invoke(cli, ["index", str(root), "--name", "notes", "--glob", "*.md",
                                      "--glob", "*.txt", "--exclude", "node_modules", "--exclude", "build/",
                                      "--exclude", "*.log.txt"])
    assert result.exit_code == 0, result.output
    assert "added 5," in result.output
    listed = CliRunner().invoke(cli, ["documents", "notes", "--json"])
    assert sorted(os.path.relpath(json.loads(line)["id"], root) for line in listed.output.splitlines()) == \
        ["build.md", "drafts/idea.md", "drafts/keep.txt", "plan.md", "todo.txt"]
    bad = CliRunner().invoke(cli, ["index", str(root), "--name", "notes", "--exclude", ""])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == ["error: exclude is empty"], bad.output
