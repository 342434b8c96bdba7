"""`index --gitignore`: the files git ignores, read from .gitignore files as git reads them.

A walked folder takes the rules of the .gitignore files in it and every folder below it
(each for its own subtree), of those in the folders above it up to its repository's root
(the first folder up holding a `.git` entry) and of that repository's `.git/info/exclude`.
A deeper file's match wins over a shallower one's, the last match in a file wins, `!`
takes a file back in, and the walk does not go into an ignored folder, so (as in git) a
file under one cannot be taken back. Outside a repository the .gitignore files of the
walked folders still apply: a user who asks for --gitignore means the ones that are there.
The user's global core.excludesFile is not read: what a run takes should depend on the
folder, not on who runs it. The pattern grammar is pathspec's (imported only here).
"""
from __future__ import annotations

import os
import re

Rules = tuple  # ((ignore: bool, regex), ...) of one file, in its order
Chain = tuple  # ((folder, Rules), ...): the files that apply in a folder, shallowest first


class GitIgnore:
    """The .gitignore files of one run (or one watch), each parsed once and parsed again
    only when its size or times change, so a walk of 10,000 files reads each once and a
    watch's next poll takes an edited one's new rule."""

    def __init__(self):
        self._parsed: dict[str, tuple] = {}  # file -> (stamp, Rules)

    def top(self, root: str) -> Chain:
        """The rules that apply inside the walked folder ``root``: its repository's
        info/exclude, then the .gitignore files from the repository's root down to it."""
        root = os.path.abspath(root)
        repo, folder = None, root
        while True:
            if os.path.lexists(os.path.join(folder, ".git")):
                repo = folder
                break
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        chain: Chain = ()
        if repo is not None:
            chain = self._add(chain, repo, _info_exclude(os.path.join(repo, ".git")))
            above = os.path.relpath(root, repo).split(os.sep) if root != repo else []
            for depth in range(len(above)):
                folder = os.path.join(repo, *above[:depth])
                chain = self._add(chain, folder, os.path.join(folder, ".gitignore"))
        return self.below(chain, root)

    def below(self, chain: Chain, folder: str) -> Chain:
        """``chain`` with ``folder``'s own .gitignore added (``folder`` absolute)."""
        return self._add(chain, folder, os.path.join(folder, ".gitignore"))

    def _add(self, chain: Chain, folder: str, file: str | None) -> Chain:
        rules = self._rules(file) if file else ()
        return chain + ((folder, rules),) if rules else chain

    def _rules(self, file: str) -> Rules:
        try:
            st = os.stat(file)
        except OSError:  # none there (or unreadable: git says nothing of it either)
            return ()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._parsed.get(file)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(file, encoding="utf-8", errors="surrogateescape") as f:
                rules = _parse(f.read().splitlines())
        except OSError:
            rules = ()
        self._parsed[file] = (stamp, rules)
        return rules


def ignored(chain: Chain, path: str, is_dir: bool) -> bool:
    """Whether the rules of ``chain`` ignore the file or folder ``path`` itself (absolute,
    under every folder of the chain), not asking about the folders above it."""
    for folder, rules in reversed(chain):  # the deepest file that matches decides
        rel = path[len(folder):].lstrip(os.sep)
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        if is_dir:
            rel += "/"
        for ignore, regex in reversed(rules):  # the last match in it
            if regex.search(rel):
                return ignore
    return False


def _parse(lines: list[str]) -> Rules:
    """The rules of a .gitignore's lines; a line git would not take (a bad range) is dropped.

    pathspec's regex for a pattern also matches every path under a folder it matches (it
    matches lists of files); here each folder is asked on its own, so a pattern must match
    the path itself: anchored at its end, or, for `foo/**` (pathspec: ``^foo/``), with
    something after the slash."""
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    rules = []
    for line in lines:
        try:
            pattern = GitIgnoreSpecPattern(line)
        except Exception:  # re.error, GitIgnorePatternError
            continue
        if pattern.include is None:  # a blank line or a comment
            continue
        source = pattern.regex.pattern
        regex = re.compile(source + ".+" if source.endswith("/") else f"(?:{source})\\Z")
        rules.append((pattern.include, regex))
    return tuple(rules)


def _info_exclude(dot_git: str) -> str | None:
    """The repository's info/exclude: in its .git folder, or (a worktree, a submodule)
    where its .git file points, in the common folder of a worktree."""
    if os.path.isdir(dot_git):
        return os.path.join(dot_git, "info", "exclude")
    try:
        with open(dot_git, encoding="utf-8", errors="surrogateescape") as f:
            line = f.readline().strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    gitdir = os.path.join(os.path.dirname(dot_git), line[len("gitdir:"):].strip())
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8", errors="surrogateescape") as f:
            gitdir = os.path.join(gitdir, f.read().strip())
    except OSError:
        pass
    return os.path.join(gitdir, "info", "exclude")
