"""Find documents on disk and stream their text.

Everything is streamed: a 200 MB text file is hashed block by block and its
text handed out in ~1 MB segments, so it is never held in memory whole. A bad
file never stops a run; it comes back as ``Skipped`` with a short reason.
"""
from __future__ import annotations

import codecs
import csv
import datetime
import errno
import fnmatch
import hashlib
import html.parser
import io
import json
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from .errors import InvalidInput, NotFound
from . import ignore, markup, validation
from .ignore import GitIgnore
from .validation import path_list

log = logging.getLogger("semsearch")

OFFICE = {".docx", ".pptx", ".odt", ".odp", ".epub"}  # zip archives of XML (office.py)
MAIL = {".eml", ".mbox"}  # e-mail (mail.py); and a Maildir's messages (maildir_message)
NOTEBOOK = ".ipynb"  # Jupyter (notebook.py)
MAILDIR = ("cur", "new", "tmp")  # the folders that make a folder a Maildir (is_maildir)
# text whose header is its metadata (_HEADERS): Markdown's front matter, Org's and AsciiDoc's header
MARKDOWN = {".md", ".markdown", ".mdown", ".mkd"}
MARKUP = {*MARKDOWN, ".org", ".adoc", ".asciidoc"}
SUPPORTED = {".txt", ".rst", *MARKUP, ".html", ".htm", ".json", ".jsonl", ".csv", ".tsv", ".pdf", *OFFICE, *MAIL, NOTEBOOK}
PLAIN = {".txt", ".rst", *MARKUP}
UNSUPPORTED = "unsupported type"  # the skip of a file a walk without --glob finds, of a type not in SUPPORTED
NO_EXTENSION = ".text"  # read as text, a file with no extension gets the type "text"
TEXT_FIELDS = ("text", "content", "body")
ID_FIELDS = ("id", "_id")
SEGMENT_BYTES = 1 << 20  # size of the text pieces handed to the chunker
BINARY_SNIFF = 8192
_MARK = "\udcff"  # stands in for undecodable bytes while a file is decoded (see _undecodable)
LEGACY = "cp1252"  # what a file that is not UTF-8 is read as, if it looks like it (see _Sniff):
# at most this share of its bytes above 0x7F (Western text has a few accented letters;
# Cyrillic or CJK in a code page of their own is mostly such bytes)
LEGACY_MAX_HIGH = 0.25
_HIGH_BYTES = bytes(range(0x80, 0x100))
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
UNDECODABLE = "semsearch.undecodable"  # the errors= of every decode of a file's bytes
NOT_UTF8 = "name is not valid UTF-8 (rename it to index it)"
NO_RECORDS = "no records"
CHANGED = "changed while it was being indexed; run again"  # a part of a file cut (jsonl_parts) that is not the one cut


@dataclass
class Document:
    key: str  # file path for whole files; f"{path}#{record_id}" for records
    source: str  # absolute file path
    metadata: dict  # JSON-serialisable
    content_hash: str  # sha256 hex of the file bytes or of the canonical record JSON
    segments: Callable[[], Iterator[str]]  # lazily yields the text in ~1 MB pieces
    replaced_chars: int = 0  # U+FFFD inserted for undecodable bytes; set while segments are read
    where: str | None = None  # a record's place in its file (path:line), which a skip of it names


@dataclass
class Skipped:
    source: str
    reason: str
    # it may read fine next time (an I/O error, a file caught half-written, a missing extra):
    # what was indexed from it stays. Otherwise (empty, binary...) the file holds no text now.
    transient: bool = False


# ---------------------------------------------------------------- walking


def iter_documents(paths: Iterable[str | Path], glob=None, exclude=None,
                   gitignore: bool = False) -> Iterator[Document | Skipped]:
    """Yield a Document or Skipped for every file under ``paths`` (see list_files, Selection)."""
    files = list_files(paths, Selection.of(glob, exclude, gitignore))
    return (doc for f in files for doc in (load_file(f, as_text=True) if isinstance(f, str) else [f]))


def list_files(paths: Iterable[str | Path], select: Selection | None = None) -> list[str | Skipped]:
    """Absolute paths of the files under ``paths``, once each, or Skipped for unreadable
    folders and files of a type a walk does not take (Selection.typed).

    Folders are walked recursively in sorted order, skipping hidden entries, semsearch
    collections and what ``select`` leaves out (Selection). Files named explicitly are
    always taken. Every path it gives is one the user asked for: load_file(as_text=True)
    reads it. The walk is done up front, so progress can show an ETA; missing paths
    raise NotFound before anything is read, a collection named raises InvalidInput.
    """
    roots = [Path(p) for p in path_list(paths)]
    select = Selection() if select is None else select
    for p in roots:
        if validation.lone_surrogate(str(p)) is not None:  # SQLite would refuse it mid-run
            raise InvalidInput(f"{_printable(p)}: {NOT_UTF8}")
        if not p.exists():
            raise NotFound(f"no such file or directory: {p}")
        if is_collection(p):
            raise InvalidInput(f"{p} is a semsearch collection, not documents to index")
    out: list[str | Skipped] = []
    seen: set[str] = set()
    maildirs: dict[str, bool] = {}  # folder -> is_maildir, asked once a run, not once a message
    named = {os.path.abspath(p) for p in roots if not p.is_dir()}
    for root in roots:
        for f in _walk(str(root), root, select) if root.is_dir() else [root]:
            if isinstance(f, Skipped):
                out.append(f)
            elif (path := os.path.abspath(f)) not in seen:
                seen.add(path)
                out.append(path if path in named or select.typed(path, maildirs) else Skipped(path, unsupported(path)))
    return out


def file_stamps(paths: Iterable[str | Path], select: Selection | None = None) -> list[tuple]:
    """The files list_files finds, each as (path, size, mtime_ns, ctime_ns), or (path,
    reason) for a folder it could not read or a file gone since the walk: what a watch
    compares between polls (watch.py). Only stats, no file opened; the change time also
    moves when a copy keeps an old mtime (cp -p) or the file's mode changes. A file of a
    type a walk does not take is there or not, (path,): a log growing beside the notes
    changes nothing that is indexed."""
    stamps: list[tuple] = []
    for f in list_files(paths, select):
        if isinstance(f, Skipped):
            stamps.append((f.source,) if f.reason == unsupported(f.source) else (f.source, f.reason))
            continue
        try:
            st = os.stat(f)
        except OSError as e:
            stamps.append((f, _os_reason(e)))
            continue
        stamps.append((f, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return stamps


@dataclass(frozen=True)
class Selection:
    """THE rule for which files under a walked folder a run takes; the walk, a watch's poll
    and the removal of vanished documents all ask it, so a run removes only what it would
    have read (a narrower --glob removes nothing outside it).

    ``globs``: a file must match one (none given: every file), against its path relative to
    the folder or its bare name; a leading ``**/`` also matches at the top.
    ``excludes``: the file, and every folder between it and the walked folder, must match
    none. A pattern without ``/`` matches a name (``node_modules``, ``*.log``); one with
    ``/``, the path relative to the folder (``drafts/*.md``); one that starts with ``/``,
    the absolute path or, as in a .gitignore, the path from the folder (``/build``: only at
    its top); a trailing ``/`` matches folders only (``build/``). The walk does not descend
    into an excluded folder.
    ``gitignore`` (--gitignore): also what git ignores (semsearch/ignore.py), read as the
    walk goes; the folder walked itself is taken, as a file named is.
    Of the files left, a walk takes those of the types with a loader (SUPPORTED) or, with
    a glob, every one (a type without a loader read as text): see typed."""
    globs: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    gitignore: GitIgnore | None = None  # the run's parsed .gitignore files; None: not asked

    @classmethod
    def of(cls, glob=None, exclude=None, gitignore=False) -> "Selection":
        """From what a user gives: None, a pattern or a list of them (validated here)."""
        globs, excludes = validation.patterns(glob, "glob"), validation.patterns(exclude, "exclude")
        if not validation.flag(gitignore, "gitignore"):
            return cls(globs, excludes)
        return cls(globs, excludes, GitIgnore())

    def selects(self, path: str, root: str) -> bool:
        """Whether the file ``path``, under the folder ``root``, is one a walk of ``root`` takes."""
        if self.excludes or self.gitignore is not None:
            parts = os.path.relpath(path, root).split(os.sep)
            here = os.path.abspath(root)
            chain = self.gitignore.top(here) if self.gitignore is not None else ()
            for depth in range(1, len(parts)):  # the folders between
                here = os.path.join(here, parts[depth - 1])
                if self.leaves_out(here, root, True, chain):
                    return False
                if self.gitignore is not None:
                    chain = self.gitignore.below(chain, here)
            if self.leaves_out(path, root, False, chain):
                return False
        return self.globbed(path, root) and self.typed(path)

    def typed(self, path: str, maildirs: dict | None = None) -> bool:
        """Whether a walk reads this file it found, by its type: one with a loader always; any
        other, as text, only when a glob asked for it (`index ~` must not embed every source
        file and log; `--glob '*.py'` names what it wants); and a Maildir's message
        (maildir_message; ``maildirs``: its memo)."""
        return bool(self.globs) or os.path.splitext(path)[1].lower() in SUPPORTED or \
            maildir_message(path, True, maildirs)

    def leaves_out(self, path: str, root: str, is_dir: bool, chain) -> bool:
        """Whether this file or folder itself (not the folders above it) is left out: an
        exclude matches it, or git ignores it by ``chain``, the .gitignore rules that apply
        where it lies (ignore.py; empty without --gitignore)."""
        return bool(self.excludes) and self.excluded(path, root, is_dir) or \
            bool(chain) and ignore.ignored(chain, os.path.abspath(path), is_dir)

    def globbed(self, path: str, root: str) -> bool:
        if not self.globs:
            return True
        rel, name = os.path.relpath(path, root), os.path.basename(path)
        return any(fnmatch.fnmatch(name, glob) or _path_matches(rel, glob) for glob in self.globs)

    def excluded(self, path: str, root: str, is_dir: bool) -> bool:
        """Whether an exclude matches this file or folder itself (not the folders above it)."""
        for pattern in self.excludes:
            if pattern.endswith("/") and not is_dir:
                continue
            pattern = pattern.rstrip("/") or "/"
            if "/" not in pattern:
                hit = fnmatch.fnmatch(os.path.basename(path), pattern)
            else:
                rel = os.path.relpath(path, root)
                if pattern.startswith("/"):  # the absolute path, or (as in .gitignore) anchored at the folder
                    hit = fnmatch.fnmatch(os.path.abspath(path), pattern) or fnmatch.fnmatch(rel, pattern[1:])
                else:
                    hit = _path_matches(rel, pattern)
            if hit:
                return True
        return False


def _path_matches(rel: str, pattern: str) -> bool:
    """A path under a folder against a pattern; a leading ``**/`` also matches at the top."""
    return fnmatch.fnmatch(rel, pattern) or pattern.startswith("**/") and fnmatch.fnmatch(rel, pattern[3:])


def _walk(root: str, folder: str | Path, select: Selection, walked: set | None = None,
          chain: tuple | None = None) -> Iterator[str | Skipped]:
    """Files under ``folder``. Symlinks are followed, but no folder is walked twice
    (``walked``: their device and inode), so a link back up ends instead of looping.
    Paths stay strings (a Path made for each entry was half the cost of a watch's poll).
    ``chain``: the .gitignore rules of the folder above (ignore.py), with --gitignore."""
    walked = set() if walked is None else walked
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in walked:
            yield Skipped(str(folder), "folder already walked (a symlink loop?)")
            return
        walked.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        yield Skipped(str(folder), _os_reason(e), transient=True)
        return
    git = select.gitignore
    if git is not None:
        here = os.path.abspath(folder)
        chain = git.top(here) if chain is None else git.below(chain, here)
    maildir = {*MAILDIR} <= {e.name for e in entries} and is_maildir(folder)  # by name first: no stat for most folders
    for e in entries:
        if not _maildir_entry(e) if maildir else e.name.startswith("."):
            continue
        p = e.path
        try:
            is_dir, is_file = e.is_dir(), e.is_file()
        except OSError as err:  # e.g. a symlink to itself
            yield Skipped(_printable(p), _os_reason(err), transient=True)
            continue
        if select.leaves_out(p, root, is_dir, chain) or is_dir and is_collection(p):
            continue
        if not is_dir and (not (is_file or os.path.exists(p))  # a dangling link: a vanished file
                           or not select.globbed(p, root)):
            continue  # (a FIFO or socket goes on, for load_file to report)
        if validation.lone_surrogate(e.name) is not None:
            yield Skipped(_printable(p), NOT_UTF8)
        elif is_dir:
            yield from _walk(root, p, select, walked, chain)
        else:
            yield p


def is_maildir(folder: str | Path) -> bool:
    """Whether ``folder`` is a Maildir (mutt, mbsync, offlineimap, notmuch, Dovecot): it
    holds the folders cur/, new/ and tmp/, one message a file in the first two."""
    return all(os.path.isdir(os.path.join(folder, name)) for name in MAILDIR)


def _maildir_entry(e: os.DirEntry) -> bool:
    """What a walk of a Maildir enters: cur/ and new/, never tmp/ (messages being
    delivered), and the Maildirs inside it: Maildir++'s folders (.Sent, .Archive.2024),
    hidden but what a user wants read, or those of a tree like mbsync's. Not the mail
    program's own files there (dovecot-uidlist, dovecot.index...)."""
    return e.name in MAILDIR[:2] or is_maildir(e.path)


def maildir_message(path: str, gone: bool = False, maildirs: dict | None = None) -> bool:
    """Whether ``path`` is a message of a Maildir: a file in its cur/ or new/, read as
    e-mail whatever its name (`1700000000.M1P2.host:2,S`). ``gone``: also a file of a
    cur/ or new/ folder no longer there (the Selection's answer for what a run removes:
    a Maildir deleted takes its messages with it). ``maildirs``: what is_maildir said of
    the folders asked about so far, kept by the caller (a walk: once a Maildir, not once
    for each of its thousands of messages)."""
    folder = os.path.dirname(path if os.path.isabs(path) else os.path.abspath(path))
    box, _, name = folder.rpartition(os.sep)  # string work: a walk asks it of every file
    if name not in MAILDIR[:2]:
        return False
    box, maildirs = box or os.sep, {} if maildirs is None else maildirs
    if box not in maildirs:
        maildirs[box] = is_maildir(box)
    return maildirs[box] or gone and not os.path.isdir(folder)


def is_collection(folder: str | Path) -> bool:
    """Whether ``folder`` is a semsearch collection (collection.py's test: it holds the
    store), which a walk does not enter: its own files are no documents."""
    from .collection import STORE_FILE  # here: collection imports this module
    return os.path.isfile(os.path.join(folder, STORE_FILE))


def unsupported(path: str) -> str:
    """THE skip reason of a file of a type with no loader that no one asked to read as text."""
    ext = os.path.splitext(path)[1].lower()
    return f"{UNSUPPORTED} {ext or '(no extension)'}"


def _printable(path: str | Path) -> str:
    """The path, with bytes of its name that are not UTF-8 written as \\xNN (printable, storable)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror or type(e).__name__


# ---------------------------------------------------------------- one file


def load_file(path: str, part: Part | None = None, as_text: bool = False) -> Iterator[Document | Skipped]:
    """Documents of one file (several for jsonl/json/csv); never raises for a bad file.
    ``part`` (of a JSONL file, see jsonl_parts): only the records of its lines.
    ``as_text``: a file of a type with no loader is read as a .txt is (the user asked for
    it: list_files's files), its type its extension; else it is skipped."""
    ext = os.path.splitext(path)[1].lower()
    if maildir_message(path):
        ext = "maildir"
    elif ext not in SUPPORTED and not as_text:
        yield Skipped(path, unsupported(path))
        return
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would wait forever
            yield Skipped(path, "not a regular file")
            return
        if ext == ".pdf":
            yield _load_pdf(path)
            return
        if ext in OFFICE:
            from .office import load_office
            yield load_office(path, ext)
            return
        if ext == NOTEBOOK:
            from .notebook import load_notebook
            yield load_notebook(path)
            return
        if ext in MAIL or ext == "maildir":
            from .mail import load_mail
            yield from load_mail(path, ext)
            return
        if part is not None:  # of a file found JSONL text when it was cut; read only if it still is that file
            yield from _load_jsonl(path, part)
            return
        with open(path, "rb") as f:
            head = f.read(BINARY_SNIFF)
        if _binary(head):
            yield Skipped(path, "binary file")
        elif ext in PLAIN:
            yield _load_plain(path, ext)
        elif ext not in SUPPORTED:  # asked for by name or --glob: as text
            yield _load_plain(path, ext if len(ext) > 1 else NO_EXTENSION)
        elif ext in (".html", ".htm"):
            yield _load_html(path, ext)
        elif ext == ".jsonl":
            yield from _load_jsonl(path, part)
        elif ext == ".json":
            yield from _load_json(path)
        else:  # .csv, .tsv
            yield from _load_csv(path)
    except OSError as e:
        yield Skipped(path, _os_reason(e), transient=True)
    except Exception as e:  # a corrupt file must not stop the run
        yield Skipped(path, f"unreadable: {type(e).__name__}: {e}", transient=True)


def _file_info(path: str, each: Callable[[bytes], None] | None = None) -> tuple[str | None, bool, str]:
    """sha256 of the file, whether it has any non-whitespace byte, and the encoding it is
    read in (see _Sniff): one streamed pass, so a file found not UTF-8 past its first
    megabyte is read as what it is from its start. ``each`` is given every block instead
    of the hash (None)."""
    h = hashlib.sha256() if each is None else None
    has_text = False
    sniff = _Sniff()
    with open(path, "rb") as f:
        while block := f.read(SEGMENT_BYTES):
            if h is None:
                each(block)
            else:
                h.update(block)
            has_text = has_text or _has_text(block, not sniff.head)
            sniff.feed(block)
    return h and h.hexdigest(), has_text, sniff.encoding()


class _Sniff:
    """THE encoding rule, fed a file's bytes block by block. UTF-16 after its byte-order
    mark; UTF-8 if it is, or says so by a BOM (stripped); else Windows-1252, the 8-bit
    encoding of old Windows tools and a superset of Latin-1's letters (its five undefined
    bytes read as Latin-1: see _undecodable), but only for text that looks like it: a few
    bytes above 0x7F and no UTF-8 sequence among them. A UTF-8 file with a stray byte, or
    Cyrillic or CJK in a code page of their own, stays UTF-8, its undecodable bytes
    replaced and counted, rather than turned into plausible-looking nonsense."""

    def __init__(self):
        self.head = b""
        self._checker = codecs.getincrementaldecoder("utf-8")()
        self._utf8 = True  # every byte so far is UTF-8
        self._size = self._high = 0
        self._utf8_sequence = False  # some bytes above 0x7F form UTF-8 characters

    def feed(self, block: bytes) -> None:
        self.head = self.head or block[:4]
        self._size += len(block)
        high = len(block) - len(block.translate(None, _HIGH_BYTES))
        self._high += high
        # the search, 45 MB/s, only where a sequence can be: an ASCII block (JSON as json.dumps
        # writes it) has none, and the check then costs what the hash does (~1 GB/s)
        self._utf8_sequence = self._utf8_sequence or high > 0 and _UTF8_SEQUENCE.search(block) is not None
        self._utf8 = self._utf8 and self._decodes(block)

    def _decodes(self, data: bytes, final: bool = False) -> bool:
        try:
            self._checker.decode(data, final)
        except UnicodeDecodeError:
            return False
        return True

    def encoding(self) -> str:
        if _utf16(self.head):
            return "utf-16"
        if self._utf8 and self._decodes(b"", final=True) or self.head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        legacy = not self._utf8_sequence and self._high <= LEGACY_MAX_HIGH * self._size
        return LEGACY if legacy else "utf-8-sig"


def _has_text(block: bytes, first: bool = True) -> bool:
    """Whether a file's bytes hold anything but blanks (in UTF-8 or UTF-16) and, in its
    ``first`` block, a byte-order mark."""
    if first:
        for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            block = block.removeprefix(bom)
    return bool(block.strip(b" \t\n\r\x0b\x0c\0"))


def split_text(text: str, size: int = SEGMENT_BYTES) -> Iterator[str]:
    """Cut an in-memory text into pieces of about ``size`` chars at whitespace."""
    while len(text) > size:
        cut = _last_space(text, size) or size
        yield text[:cut]
        text = text[cut:]
    if text:
        yield text


def _last_space(text: str, limit: int) -> int:
    """Index just past the last whitespace in ``text[:limit]``; 0 if there is none."""
    return max(text.rfind(c, 0, limit) for c in "\n \t\r") + 1


def _read_segments(path: str, encoding: str, doc: Document) -> Iterator[str]:
    """Decode a file incrementally, yielding ~1 MB pieces cut after whitespace."""
    dec = codecs.getincrementaldecoder(encoding)(errors=UNDECODABLE)
    with open(path, "rb") as f:
        carry = ""
        doc.replaced_chars = 0
        following = f.read(SEGMENT_BYTES)
        while True:  # a block is known to be the last when the one after it is empty
            block, following = following, following and f.read(SEGMENT_BYTES)
            last = not following  # the end: nothing to carry over
            text, replaced = _unmark(dec.decode(block, final=last))
            doc.replaced_chars += replaced
            text = carry + text
            if last:
                if text:
                    yield text
                return
            cut = _last_space(text, len(text))
            if not cut:
                if len(text) < 4 * SEGMENT_BYTES:
                    carry = text  # no whitespace yet: keep reading, up to a hard cut
                    continue
                cut = len(text)
            yield text[:cut]
            carry = text[cut:]


def _load_plain(path: str, ext: str) -> Document | Skipped:
    digest, has_text, encoding = _file_info(path)
    if not has_text:
        return Skipped(path, "empty file")
    meta = {"path": path, "type": ext[1:]}
    skip, title = 0, None
    if ext in _HEADERS:
        skip, fields = _front_matter(path, encoding, _HEADERS[ext])
        for key, value in fields.items():
            meta.setdefault(key, value)  # the loader's path and type stay
        if isinstance(fields.get("title"), str):  # one line, in the metadata and first in the text
            title = titled(meta, fields["title"], "") or None
    doc = Document(path, path, meta, digest, lambda: iter(()))
    doc.segments = lambda: _body_segments(path, encoding, doc, skip, title)
    return doc


MAX_FRONT_MATTER = 64 * 1024  # bytes of a file's head searched for its front matter's end
# a YAML block on the file's first line, ended by a --- or ... line
_FRONT_MATTER = re.compile(r"---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


def _front_matter(path: str, encoding: str, reader: Callable) -> tuple[int, dict]:
    """(characters of text the front matter takes, its fields as metadata) of a file, its
    header found by ``reader`` (see markup); (0, {}) where it has none, or one that cannot
    be metadata, which stays in the text (a warning says why). Only the file's head is
    read: a big file stays streamed."""
    with open(path, "rb") as f:
        data = f.read(MAX_FRONT_MATTER + 1)
    whole = len(data) <= MAX_FRONT_MATTER
    head, _ = _unmark(codecs.getincrementaldecoder(encoding)(errors=UNDECODABLE).decode(data[:MAX_FRONT_MATTER], whole))
    try:
        found = reader(head if whole else head[:head.rfind("\n") + 1], whole)  # no line cut short
        if found is None:
            return 0, {}
        end, data = found
        fields = validation.json_value(_fields(data, [MAX_FRONT_MATTER]), "front matter")
    except markup.NoEnd:
        log.warning("%s: no end of front matter in its first %d KB; indexed as plain text",
                    path, MAX_FRONT_MATTER // 1024)
        return 0, {}
    except (InvalidInput, ValueError, RecursionError) as e:
        log.warning("%s: front matter not read, indexed as plain text: %s", path, " ".join(str(e).split()))
        return 0, {}
    return end, fields


def _yaml_header(head: str, whole: bool) -> tuple[int, dict] | None:
    """A YAML mapping from a ``---`` first line to a ``---`` or ``...`` line."""
    if not re.match(r"---[ \t]*\r?\n", head):
        return None
    match = _FRONT_MATTER.match(head)
    if match is None:
        if whole:
            return None
        raise markup.NoEnd
    import yaml  # here, not at the top: `import semsearch` stays light

    try:
        data = yaml.load(match.group(1), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise ValueError(str(e)) from e
    if data is not None and not isinstance(data, dict):
        return None  # a list or a string: no front matter, but a --- rule around text
    return match.end(), data or {}


def _markdown_header(head: str, whole: bool) -> tuple[int, dict] | None:
    """YAML front matter (---) or Hugo's TOML (+++)."""
    return _yaml_header(head, whole) or markup.toml_header(head, whole)


_HEADERS = {**dict.fromkeys(MARKDOWN, _markdown_header),
            ".org": markup.org_header, ".adoc": markup.adoc_header, ".asciidoc": markup.adoc_header}


def _fields(mapping: dict, budget: list[int], prefix: str = "", depth: int = 0) -> dict:
    """Front-matter fields as metadata: a nested mapping's keys flattened to ``a.b`` (a
    where matches top-level keys only), dates as ISO text, None left out. ``budget``: the
    values still allowed, so YAML aliases cannot expand into millions of them."""
    if depth > validation.MAX_METADATA_DEPTH:
        raise ValueError(f"nested more than {validation.MAX_METADATA_DEPTH} levels deep")
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}" if isinstance(key, str) else key  # json_value refuses a key not text
        if isinstance(value, dict):
            _spend(budget)
            out.update(_fields(value, budget, f"{name}.", depth + 1))
        elif (value := _value(value, budget)) is not None:
            out.setdefault(name, value)
    return out


def _value(value, budget: list[int]):
    """A front-matter value as JSON holds it (json_value checks the rest: no NaN, no bytes)."""
    _spend(budget)
    if isinstance(value, (datetime.date, datetime.time)):  # and datetime, date's subclass; TOML has times
        return value.isoformat()
    if isinstance(value, list):
        return [v for v in (_value(item, budget) for item in value) if v is not None]
    if isinstance(value, dict):  # in a list: kept as an object
        return {k: v for k, item in value.items() if (v := _value(item, budget)) is not None}
    return value


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("too many values (aliases expanding?)")


def _body_segments(path: str, encoding: str, doc: Document, skip: int, title: str | None) -> Iterator[str]:
    """The file's text less its first ``skip`` characters (the front matter), the title
    in the first piece (a segment is chunked on its own: alone, the title is no context)."""
    head = f"{title}\n" if title else ""
    for segment in _read_segments(path, encoding, doc):
        cut = min(skip, len(segment))
        skip -= cut
        if segment[cut:]:
            yield head + segment[cut:]
            head = ""
    if head:
        yield head


def _binary(head: bytes) -> bool:
    """Whether a file's first BINARY_SNIFF bytes say it holds no text."""
    return b"\0" in head and not _utf16(head)


def _utf16(head: bytes) -> bool:
    """Whether a file starts with a UTF-16 byte-order mark (Notepad and PowerShell write them)."""
    return head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and head[:4] != codecs.BOM_UTF32_LE


def _undecodable(e: UnicodeDecodeError) -> tuple[str, int]:
    """The error handler of every decode of a file's bytes: undecodable bytes become _MARK,
    which _unmark counts and turns into U+FFFD. No decoder yields a lone surrogate itself,
    so a U+FFFD the file holds is not counted, in UTF-8 or UTF-16 alike. Windows-1252 (the
    'charmap' codec) leaves 0x81 0x8D 0x8F 0x90 0x9D undefined: they read as Latin-1 does."""
    if e.encoding == "charmap":
        return e.object[e.start:e.end].decode("latin-1"), e.end
    return _MARK, e.end


codecs.register_error(UNDECODABLE, _undecodable)


def _unmark(text: str) -> tuple[str, int]:
    """The decoded text with U+FFFD for each run of undecodable bytes, and how many."""
    n = text.count(_MARK)
    return (text.replace(_MARK, "\ufffd") if n else text), n


def decode_text(data: bytes) -> tuple[str, int]:
    """A whole file's bytes decoded by the one encoding rule (_Sniff; BOM stripped), and
    the number of U+FFFD put in. `embed --file` and `search --queries` read through it too."""
    sniff = _Sniff()
    sniff.feed(data)
    return _unmark(data.decode(sniff.encoding(), UNDECODABLE))


def _open_text(path: str, newline: str):
    """The file opened for its text, decoded as _decode does (_unmark what is read); its
    encoding is found by reading it through once (see _file_info). A pipe (`<(cmd)`,
    /dev/stdin) can be read only once: its bytes are kept and read from memory."""
    if not os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
        sniff = _Sniff()
        sniff.feed(data)
        return io.TextIOWrapper(io.BytesIO(data), encoding=sniff.encoding(), errors=UNDECODABLE, newline=newline)
    _, _, encoding = _file_info(path)
    return open(path, encoding=encoding, errors=UNDECODABLE, newline=newline)


def readable_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file to read records or lines from: a regular file or a pipe
    (`--jsonl <(cmd)`), not a folder or a missing path."""
    return os.path.exists(path) and not os.path.isdir(path)


# ---------------------------------------------------------------- html


class _HTMLText(html.parser.HTMLParser):
    SKIP = {"script", "style", "noscript", "template"}
    # tags inside a line of text; every other tag (td, dd, blockquote, li, ...) parts words
    INLINE = {"a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em", "font", "i",
              "ins", "kbd", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time",
              "tt", "u", "var", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP or tag == "title":
            self.stack.append(tag)
        elif tag not in self.INLINE:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        elif tag not in self.INLINE:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.stack:
            self.parts.append(data)
        elif self.stack[-1] == "title":
            self.title.append(data)


def _load_html(path: str, ext: str) -> Document | Skipped:
    with open(path, "rb") as f:
        data = f.read()
    text, replaced = decode_text(data)
    p = _HTMLText()
    p.feed(text)
    p.close()
    meta = {"path": path, "type": ext[1:]}
    body = titled(meta, "".join(p.title), "".join(p.parts).strip())
    if not body:
        return Skipped(path, "empty file")
    digest = hashlib.sha256(data).hexdigest()
    return Document(path, path, meta, digest, lambda: split_text(body), replaced)


def titled(meta: dict, title: str, body: str) -> str:
    """THE title rule (HTML, office files): a title, its blanks made single spaces, goes
    in the metadata and on the first line of the text, which search then finds it in."""
    title = " ".join(title.split())
    if title:
        meta["title"] = title
        body = f"{title}\n{body}" if body else title
    return body


# ---------------------------------------------------------------- records


def canonical_json(obj) -> bytes:
    """One spelling of a JSON value (keys sorted, no spaces): a record's hash, and whether
    re-added metadata is the same, compare by it, so key order alone is no change."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Record:
    id: str | None  # None: the record names no id
    text: str  # the title, if any, then the text
    metadata: dict  # every field but the text


def parse_record(rec: dict) -> Record | str:
    """THE record rule (files and `add --jsonl`): the text is the first of text/content/body
    (any case), a title goes before it, the id is id or _id; or the reason it is no record."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    lower = {k.lower(): k for k in rec if isinstance(k, str)}
    field = next((lower[f] for f in TEXT_FIELDS if f in lower), None)
    if field is None:
        return "no text field"
    text = rec[field]
    if not isinstance(text, str):
        return f"text field {field!r} is not a string"
    title = rec.get(lower["title"]) if "title" in lower else None
    if isinstance(title, str) and title.strip():
        text = f"{title}\n{text}"
    if not text.strip():
        return "empty text"
    id_field = next((lower[f] for f in ID_FIELDS if f in lower), None)
    rid = rec.get(id_field) if id_field else None
    return Record(None if rid in (None, "") else str(rid), text, {k: v for k, v in rec.items() if k != field})


def _record_doc(path: str, rec: dict, position: int, replaced: int = 0) -> Document | str:
    """A Document for one record of a file, or the reason it cannot be one."""
    parsed = parse_record(rec)
    if isinstance(parsed, str):
        return parsed
    try:  # a lone surrogate (JSON "\ud800") or an integer beyond 64 bits: this record, not the file
        validation.json_value(rec, "the record")
    except InvalidInput as e:
        return str(e)
    rid = parsed.id if parsed.id is not None else str(position)
    return Document(f"{path}#{rid}", path, parsed.metadata, hashlib.sha256(canonical_json(rec)).hexdigest(),
                    lambda: split_text(parsed.text), replaced)


def _records_to_docs(path: str, items: Iterable[tuple[str, int, object, str | None, int]]):
    """Shared tail of jsonl/json/csv: build Documents, skip bad or duplicate records."""
    ids: set[str] = set()
    any_item = False
    for where, position, rec, error, replaced in items:
        any_item = True
        if error is not None:
            yield Skipped(f"{path}:{where}", error)
            continue
        doc = _record_doc(path, rec, position, replaced)
        if isinstance(doc, str):
            yield Skipped(f"{path}:{where}", doc)
        else:
            doc.where = f"{path}:{where}"
            if doc.key in ids:
                yield duplicate(doc.where, doc.key)
            else:
                ids.add(doc.key)
                yield doc
    if not any_item:
        yield Skipped(path, NO_RECORDS)


def duplicate(where: str, key: str) -> Skipped:
    """THE skip of a record whose key an earlier record of its file has (`index --ray` asks
    it of the records of a file it loaded in parts, across the parts)."""
    path = where.rsplit(":", 1)[0]  # where: the file's path, ":", the record's line or [index]
    return Skipped(where, f"duplicate id {key[len(path) + 1:] if key.startswith(path + '#') else key}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range (JSON has no infinity)")
    return value


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def _json(text: str):
    """json.loads less Python's extensions NaN and ±Infinity (and numbers that overflow to
    them): metadata is stored as JSON, which SQLite cannot read with them in it."""
    return json.loads(text, parse_constant=_not_json, parse_float=_finite)


def _jsonl_lines(path: str, part: Part | None = None):
    """(lineno, object or None, error or None, replaced chars) for each non-blank line
    (of ``part``'s lines only, if given)."""
    with _open_text(path, newline="\n") if part is None else _open_part(path, part) as f:
        for lineno, raw in enumerate(f, 1 if part is None else part.line):
            if not raw.strip():
                continue
            line, replaced = _unmark(raw.removeprefix("\ufeff"))  # a BOM mid-file: files joined by cat
            try:
                yield lineno, _json(line), None, replaced
            except json.JSONDecodeError:
                yield lineno, None, "invalid JSON", replaced
            except ValueError as e:  # NaN, Infinity
                yield lineno, None, f"invalid JSON: {e}", replaced
            except RecursionError:
                yield lineno, None, "invalid JSON (nested too deeply)", replaced


def read_records(path: str | Path) -> Iterator[dict]:
    """THE JSONL reader: the objects of a .jsonl file; InvalidInput naming the file and line
    at the first bad line (NotFound if there is no file)."""
    return (obj for _, obj in numbered_records(path))


def numbered_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each record of a .jsonl file, checked as read_records does."""
    if not readable_file(path):
        raise NotFound(f"no such file: {path}")
    for lineno, obj, error, _ in _jsonl_lines(str(path)):
        if error is not None:
            raise InvalidInput(f"{path} line {lineno}: {error}")
        if not isinstance(obj, dict):
            raise InvalidInput(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _load_jsonl(path: str, part: Part | None = None):
    return _records_to_docs(path, ((str(n), n, o, e, r) for n, o, e, r in _jsonl_lines(path, part)))


class Part(NamedTuple):
    """Whole lines of a JSONL file: what one `index --ray` call loads of a big one."""
    start: int  # byte offset of its first line
    end: int  # byte offset past its last line
    line: int  # its first line's number
    encoding: str  # the whole file's (see _Sniff)
    size: int  # the file's size and modification time when it was cut: a part reads that file only
    mtime_ns: int


def jsonl_parts(path: str, part_bytes: int) -> list[Part]:
    """A JSONL file cut after the newline that ends each ~part_bytes, in one pass that counts
    newlines (line numbers) and sniffs the whole file's encoding; load_file of each part
    gives what load_file of the file gives, less the two things only the whole file says:
    a key a record in an earlier part had (Document.where: see duplicate) and "no records"
    (said by every part then). [] where the file stays whole: no bigger than part_bytes,
    unreadable, binary, blank, UTF-16 (a newline there is not one byte), or changing as it
    was cut. A part reads nothing of a file changed since (see _Range)."""
    try:
        cut_from = os.stat(path)
        if cut_from.st_size <= part_bytes:
            return []
        with open(path, "rb") as f:
            if _binary(f.read(BINARY_SNIFF)):
                return []
        starts = [(0, 1)]  # (offset, line number) of each part's first line
        pos = lines = 0  # bytes before the block; newlines before the block

        def cut(block: bytes) -> None:
            nonlocal pos, lines
            counted = 0  # newlines of block[:counted] are in lines
            while (i := block.find(b"\n", max(counted, starts[-1][0] + part_bytes - 1 - pos))) >= 0:
                lines += block.count(b"\n", counted, i + 1)
                counted = i + 1
                starts.append((pos + counted, lines + 1))
            lines += block.count(b"\n", counted)
            pos += len(block)

        _, has_text, encoding = _file_info(path, cut)
        changing = _stamp(os.stat(path)) != _stamp(cut_from)
    except OSError:  # load_file says why, once
        return []
    starts = [s for s in starts if s[0] < pos]
    if not has_text or encoding == "utf-16" or len(starts) < 2 or changing:
        return []
    ends = [s[0] for s in starts[1:]] + [pos]
    return [Part(start, end, line, encoding, *_stamp(cut_from)) for (start, line), end in zip(starts, ends)]


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


class _Range(io.RawIOBase):
    """A part's bytes, read as a file: OSError (CHANGED) unless the file is the one it was
    cut from (its size and mtime, checked after each read: the bytes read are that file's)
    and the part starts a line. A file changed since the cut had parts starting mid-line:
    their first line, read as a record, may be a fragment that is valid JSON."""

    def __init__(self, path: str, part: Part):
        self._file = open(path, "rb")
        self._part, self._left = part, part.end - part.start
        try:
            self._file.seek(max(part.start - 1, 0))
            if part.start and self._file.read(1) != b"\n":
                raise OSError(errno.ESTALE, CHANGED)
            self._check()
        except BaseException:
            self._file.close()
            raise

    def _check(self) -> None:
        if _stamp(os.fstat(self._file.fileno())) != (self._part.size, self._part.mtime_ns):
            raise OSError(errno.ESTALE, CHANGED)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(memoryview(buffer)[:self._left]) if self._left else 0
        self._check()
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_part(path: str, part: Part):
    """A part's lines as _open_text gives the whole file's: decoded in the file's encoding,
    only the file's first part stripped of a byte-order mark."""
    encoding = "utf-8" if part.start and part.encoding == "utf-8-sig" else part.encoding
    return io.TextIOWrapper(io.BufferedReader(_Range(path, part)), encoding=encoding,
                            errors=UNDECODABLE, newline="\n")


def _load_json(path: str):
    with open(path, "rb") as f:
        text, replaced = decode_text(f.read())
    try:
        data = _json(text) if text.strip() else []  # blank: no records
    except RecursionError:
        yield Skipped(path, "invalid JSON: nested too deeply", transient=True)
        return
    except ValueError as e:  # JSONDecodeError, NaN, Infinity
        yield Skipped(path, f"invalid JSON: {e}", transient=True)
        return
    items = data if isinstance(data, list) else [data]
    # Item positions are 1-based, like line numbers; the replaced count goes to the first record.
    yield from _records_to_docs(
        path, ((f"[{i - 1}]", i, o, None, replaced if i == 1 else 0) for i, o in enumerate(items, 1)))


def _load_csv(path: str):
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long text cells are the point
    with _open_text(path, newline="") as f:
        delimiter = _delimiter(f.readline(), "\t" if path.lower().endswith(".tsv") else ",")
        f.seek(0)
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames:
            reader.fieldnames = [_unmark(c)[0] for c in reader.fieldnames]
        fields = [c for c in (reader.fieldnames or []) if c is not None and c.strip()]
        if not fields:  # a blank file
            yield from _records_to_docs(path, ())
            return
        if not any(c.strip().lower() in TEXT_FIELDS for c in fields):
            yield Skipped(path, "no text column")
            return

        def rows():
            try:
                for n, row in enumerate(reader, 1):
                    row.pop(None, None)  # cells beyond the header
                    rec, replaced = {}, 0
                    for k, v in row.items():
                        if isinstance(v, str):
                            v, marks = _unmark(v)
                            replaced += marks
                        rec[k.strip()] = v
                    yield str(reader.line_num), n, rec, None, replaced
            except csv.Error as e:
                yield str(reader.line_num), 0, None, f"CSV error: {e}", 0

        yield from _records_to_docs(path, rows())


def _delimiter(header: str, default: str) -> str:
    """The delimiter of a CSV file's header line: the most frequent of , ; tab | outside
    quotes (Excel writes ; in many European locales), or ``default`` where it has none."""
    bare = re.sub(r'"[^"]*"', "", header)
    best = max(",;\t|", key=bare.count)
    return best if bare.count(best) else default


# ---------------------------------------------------------------- pdf


def _load_pdf(path: str) -> Document | Skipped:
    """Every page's text is extracted here, once: pypdf raises on a broken page, and here
    that skips the file, where while embedding it would stop the run."""
    try:
        from pypdf import PdfReader
    except ImportError:
        return Skipped(path, "PDF support needs `pip install semsearch[pdf]`", transient=True)
    digest, _, _ = _file_info(path)
    reader = PdfReader(path)
    if reader.is_encrypted:
        return Skipped(path, "encrypted PDF")
    pages = [page.extract_text() or "" for page in reader.pages]
    if not any(text.strip() for text in pages):
        return Skipped(path, "no extractable text (scanned PDF?)")
    return Document(path, path, {"path": path, "type": "pdf", "pages": len(pages)}, digest,
                    lambda: (piece for text in pages if text for piece in split_text(text + "\n")))
