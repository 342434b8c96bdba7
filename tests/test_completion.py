"""Shell completion: commands and options are click's; collection names come from --home."""
import os
import subprocess
import sys

from semsearch.collection import Collection


def complete(words: str, cword: int, **env) -> list[str]:
    """What bash completion offers for COMP_WORDS at COMP_CWORD, from a real process."""
    run = subprocess.run([sys.executable, "-c", "from semsearch.cli import cli; cli(prog_name='semsearch')"],
                         env={**os.environ, "_SEMSEARCH_COMPLETE": "bash_complete", "COMP_WORDS": words,
                              "COMP_CWORD": str(cword), **env}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and not run.stderr, run.stderr
    return [line for line in run.stdout.splitlines() if line]


def test_collection_names_complete_wherever_a_name_is_asked(home, embedder, tmp_path):
    for name in ("notes", "novels", "other"):
        Collection.create(name, embedder=embedder).close()
    assert complete("semsearch search no", 2) == ["plain,notes", "plain,novels"]
    assert complete("semsearch index docs --name n", 4) == ["plain,notes", "plain,novels"]
    assert complete("semsearch serve notes o", 3) == ["plain,other"]
    elsewhere = tmp_path / "elsewhere"
    Collection.create(elsewhere / "far", embedder=embedder).close()
    assert complete(f"semsearch --home {elsewhere} info ", 4) == ["plain,far"]  # --home on the line wins
    assert complete("semsearch info ", 2, SEMSEARCH_HOME=str(tmp_path / "none")) == []  # no home: nothing
    assert "plain,search" in complete("semsearch sea", 1)  # commands: click's own
