"""`index --gitignore` (semsearch/ignore.py, through loaders.Selection): what git ignores is
left out, by the walk, a watch's poll and the removal of vanished documents alike. The
oracle is git itself: `git ls-files --others --cached --exclude-standard` on the same tree."""
import json
import os
import random
import subprocess

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.loaders import Selection, Skipped, file_stamps, iter_documents
from semsearch.watch import watch_files

from test_watch import Script  # the watch scripted between two polls: no sleeps

FILES = {
    "notes.md": "The launch plan: rockets, fuel and a countdown.",
    "build.md": "How the build works: make, then test.",  # build/ is a folder pattern
    "build/out.txt": "Generated output of the build step.",
    "build/keep.log.txt": "Under an ignored folder: no ! takes it back.",
    "server.log.txt": "GET /index 200 in 3 ms",
    "keep.log.txt": "A log kept on purpose, by a ! line.",
    "vendor/lib/README.md": "Install this package with npm install.",
    "docs/vendor/guide.md": "Only the top vendor folder is ignored.",
    "docs/api/ref.md": "The reference of the search API.",
    "docs/api/trace.log.txt": "A log two folders down: the root's pattern applies.",
    "docs/important.log.txt": "Taken back in by docs/.gitignore.",
    "docs/secret.md": "Left out by .git/info/exclude.",
    "drafts/public.md": "A draft that is published.",
    "drafts/idea.md": "An unfinished idea about kites and wind.",
    "drafts/sub/public.md": "Under drafts/sub, which drafts/.gitignore ignores: stays out.",
    ".hidden.md": "Hidden: never walked.",
}
GITIGNORES = {
    ".gitignore": "# build output\nbuild/\n*.log.txt\n!keep.log.txt\n/vendor\n",
    "docs/.gitignore": "!important.log.txt\n",
    "drafts/.gitignore": "*\n!public.md\n",
}
TAKEN = ["build.md", "docs/api/ref.md", "docs/important.log.txt", "docs/vendor/guide.md", "drafts/public.md",
         "keep.log.txt", "notes.md"]


def git(*args, cwd):
    """git with no user or system configuration (no global excludes file)."""
    env = {**os.environ, "HOME": str(cwd), "XDG_CONFIG_HOME": os.path.join(cwd, ".xdg"),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def repo(tmp_path, files=FILES, gitignores=GITIGNORES, track="notes.md"):
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", cwd=root)
    for rel, text in {**files, **gitignores}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with open(root / ".git" / "info" / "exclude", "a") as f:
        f.write("secret.md\n")
    if track:
        git("add", track, cwd=root)  # one tracked file, for --cached
    return root


def git_takes(folder) -> list[str]:
    """What git lists in ``folder`` (tracked or not ignored), less hidden files, which no walk takes."""
    listed = git("ls-files", "--others", "--cached", "--exclude-standard", cwd=folder).splitlines()
    return sorted(p for p in listed if not any(part.startswith(".") for part in p.split("/")))


def taken(root, **select) -> list[str]:
    docs = list(iter_documents([root], **select))
    assert not [d for d in docs if isinstance(d, Skipped)], docs
    return sorted(os.path.relpath(d.key, root).replace(os.sep, "/") for d in docs)


def every_file(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def test_the_files_taken_are_the_ones_git_does_not_ignore(tmp_path):
    root = repo(tmp_path)
    assert taken(root, gitignore=True) == TAKEN == git_takes(root)
    assert taken(root) == sorted(rel for rel in FILES if not rel.startswith("."))  # off by default
    # the removal's question, file by file (hidden ones and .git's included), answers as the walk did
    select = Selection.of(gitignore=True)
    assert [rel for rel in every_file(root) if not any(p.startswith(".") for p in rel.split("/"))
            and select.selects(str(root / rel), str(root))] == TAKEN
    # a watch's poll stats what the walk takes
    assert sorted(os.path.relpath(s[0], root) for s in file_stamps([root], select)) == TAKEN


def test_a_subfolder_walked_takes_the_rules_of_the_folders_above_it(tmp_path):
    root = repo(tmp_path)
    docs = root / "docs"
    assert taken(docs, gitignore=True) == ["api/ref.md", "important.log.txt", "vendor/guide.md"] == git_takes(docs)
    select = Selection.of(gitignore=True)
    assert [rel for rel in every_file(docs) if not rel.startswith(".")
            and select.selects(str(docs / rel), str(docs))] == taken(docs, gitignore=True)
    # a folder or file named in PATHS is taken, as with --exclude: what is in it still follows the rules
    # (build/ itself named: the ! of keep.log.txt takes it back in there)
    assert taken(root / "build", gitignore=True) == ["keep.log.txt", "out.txt"]
    named = root / "server.log.txt"
    assert [d.key for d in iter_documents([named], gitignore=True)] == [str(named)]


def test_the_gitignore_of_a_folder_outside_any_repository_still_applies(tmp_path):
    folder = tmp_path / "notes"
    for rel, text in {"a.md": "Cats purr.", "b.log.txt": "A log.", "out/c.md": "Output.",
                      "sub/d.md": "Dogs bark.", ".gitignore": "*.log.txt\nout/\n"}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    assert not any((p / ".git").exists() for p in [folder, *folder.parents])
    assert taken(folder, gitignore=True) == ["a.md", "sub/d.md"]


def test_a_gitignore_is_parsed_once_a_run_and_again_when_it_changes(tmp_path):
    root = repo(tmp_path)
    select = Selection.of(gitignore=True)
    first = select.gitignore.top(str(root))
    assert select.gitignore.top(str(root))[-1][1] is first[-1][1]  # the parsed rules kept: not read again
    assert "server.log.txt" not in [os.path.relpath(s[0], root) for s in file_stamps([root], select)]
    (root / ".gitignore").write_text("build/\n")
    assert "server.log.txt" in [os.path.relpath(s[0], root) for s in file_stamps([root], select)]


def test_gitignore_must_be_true_or_false(tmp_path):
    from semsearch.errors import InvalidInput
    with pytest.raises(InvalidInput, match="gitignore must be True or False, not str"):
        list(iter_documents([tmp_path], gitignore="no"))


def test_reindexing_with_gitignore_neither_adds_nor_removes_what_git_ignores(home, tmp_path):
    root = repo(tmp_path)
    with Collection.create("c", chunk_tokens=32, overlap=8) as coll:
        assert coll.add_files([root]).added == len(FILES) - 1  # everything but the hidden file
        report = coll.add_files([root], gitignore=True)
        assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, len(TAKEN))
        (root / "server.log.txt").unlink()  # vanished, but ignored: stays
        (root / "drafts" / "idea.md").unlink()  # under a folder's own .gitignore: stays
        (root / "notes.md").unlink()  # vanished and taken: removed
        report = coll.add_files([root], gitignore=True)
        assert (report.added, report.removed) == (0, 1)
        keys = {os.path.relpath(k, root) for k, _ in coll.store.documents_under(str(root))}
        assert keys == {rel for rel in FILES if not rel.startswith(".")} - {"notes.md"}
        # a run that takes them again sees them gone
        assert coll.add_files([root]).removed == 2


def test_a_watch_takes_an_edited_gitignore_at_its_next_poll(home, tmp_path, embedder):
    """A file a .gitignore comes to ignore is neither read again nor removed (even once
    deleted); one it no longer ignores is indexed at the next pass."""
    root = repo(tmp_path, {"a.md": "Cats purr and sleep most of the day.", "b.md": "Dogs bark at the mail.",
                           "server.log.txt": "GET /index 200 in 3 ms"}, {".gitignore": "*.log.txt\n"}, track=None)
    passes = []

    def ignore_b():
        assert [(p.report.added, p.report.removed) for p in passes] == [(2, 0)]
        (root / ".gitignore").write_text("*.log.txt\nb.md\n")
        (root / "b.md").write_text("Changed while ignored: not read.")

    def take_the_log_back():
        assert all((p.report.added, p.report.updated, p.report.removed) == (0, 0, 0) for p in passes[1:])
        (root / "b.md").unlink()  # ignored, then gone: still not removed
        (root / ".gitignore").write_text("b.md\n")

    def done():
        assert (passes[-1].report.added, passes[-1].report.removed) == (1, 0)

    watch_files("notes", [root], every=0.01, stop=Script(ignore_b, take_the_log_back, done),
                on_pass=passes.append, gitignore=True, embedder=embedder)
    with Collection.open("notes") as coll:
        got = {os.path.basename(d.source): d.text for d in coll.documents()}
    assert got == {"a.md": "Cats purr and sleep most of the day.", "b.md": "Dogs bark at the mail.",
                   "server.log.txt": "GET /index 200 in 3 ms"}


def test_the_cli_flag_leaves_out_what_git_ignores(home, tmp_path):
    root = repo(tmp_path)
    result = CliRunner().invoke(cli, ["index", str(root), "--name", "notes", "--gitignore"])
    assert result.exit_code == 0, result.output
    assert f"added {len(TAKEN)}," in result.output
    listed = CliRunner().invoke(cli, ["documents", "notes", "--json"])
    assert sorted(os.path.relpath(json.loads(line)["id"], root) for line in listed.output.splitlines()) == TAKEN
    helped = CliRunner().invoke(cli, ["index", "--help"])
    assert "--gitignore" in helped.output and "Leave out what git ignores" in helped.output


def test_index_on_ray_leaves_out_what_git_ignores(tmp_path, home, ray_local):
    from semsearch.distributed import index_paths
    root = repo(tmp_path)
    with Collection.create("onray") as coll:
        assert coll.add_files([root]).added == len(FILES) - 1  # here: one run on Ray is enough
        (root / "server.log.txt").unlink()  # ignored: stays
        (root / "notes.md").unlink()
        report = index_paths(coll, [root], gitignore=True)
        assert (report.added, report.removed, report.unchanged) == (0, 1, len(TAKEN) - 1)


def test_pathspec_is_imported_only_when_a_gitignore_is_read(tmp_path):
    import sys
    code = ("import sys, semsearch, semsearch.cli, semsearch.loaders, semsearch.watch\n"
            "print('pathspec' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split() == ["False"]


PATTERNS = ["*", "!*/", "!*.md", "foo/**", "**/x.md", "a/**/b", "build/", "/a", "b/", "!b/", "!x.md", "*.txt",
            "foo", "!foo/", "a/*", "!a/b", "doc/*/", "**/", "!**/", "*/", "a/**", "!/a/b", "[ab]", "!y.txt", "?"]


@pytest.mark.parametrize("seed", range(40))
def test_random_trees_and_gitignores_take_what_git_lists(tmp_path, seed):
    """Folders named like the patterns, .gitignores of 1-4 of them (folder-only, anchored, **,
    ! of folders and files): the walk takes what git lists, and selects() agrees."""
    rnd = random.Random(seed)
    folders, files, gitignores = [""], {}, {}
    for _ in range(8):
        folders.append(os.path.join(rnd.choice(folders), rnd.choice(["a", "b", "foo", "build", "doc"])))
    for folder in dict.fromkeys(folders):
        for name in rnd.sample(["x.md", "y.txt", "z.md", "a.txt"], 3):
            files[os.path.join(folder, name)] = "text"
        if rnd.random() < 0.5:
            gitignores[os.path.join(folder, ".gitignore")] = "\n".join(rnd.sample(PATTERNS, rnd.randint(1, 4)))
    root = repo(tmp_path, files, gitignores, track=None)
    assert taken(root, gitignore=True) == git_takes(root)
    select = Selection.of(gitignore=True)
    assert [rel for rel in taken(root) if select.selects(str(root / rel), str(root))] == taken(root, gitignore=True)
