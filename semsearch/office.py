"""Text of Word (.docx), PowerPoint (.pptx), OpenDocument (.odt, .odp) and EPUB files.

All four are zip archives of XML parts, read here with the standard library only
(zipfile + expat): no extra to install for the documents people have most. The
parts are untrusted, so every file gets a budget of unpacked bytes (a zip bomb
stops at it, whatever its headers claim), only stored or deflated members are
read (deflate cannot blow up inside one read; bzip2 and LZMA can), and XML with
an internal DTD (entity declarations: "billion laughs") is refused. A bad file
comes back as a Skipped with a one-line reason, like every loader's.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import zipfile
import zlib
from typing import Callable, Iterator
from urllib.parse import unquote
from xml.parsers import expat

from .loaders import SEGMENT_BYTES, Document, Skipped, _HTMLText, decode_text, split_text, titled

MAX_UNPACKED = 256 << 20  # bytes unpacked per file, all parts together: a long book's XML is tens of MB
MAX_SPACES = 1000  # an ODF <text:s text:c="..."/> counts spaces: no billion of them
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an encrypted Office file is an OLE container, not a zip
TOO_BIG = f"too large: over {MAX_UNPACKED >> 20} MiB unpacked (a zip bomb?)"
ENCRYPTED = "encrypted (password-protected) document"
EMPTY = "empty file"
DTD = "XML with a DTD of its own (entity declarations) refused"
_TEXT_C = "urn:oasis:names:tc:opendocument:xmlns:text:1.0 c"


class _DTD(Exception):
    """An XML part with an internal DTD (see _no_internal_subset)."""


class _Bad(Exception):
    """Why a file is skipped; ``transient``: see loaders.Skipped."""

    def __init__(self, reason: str, transient: bool = False):
        super().__init__(reason)
        self.transient = transient


def load_office(path: str, ext: str) -> Document | Skipped:
    """The Document of a .docx/.pptx/.odt/.odp/.epub file, or why it is skipped. Its text is
    read here, whole, like a PDF's: a broken part skips the file now, not mid-embedding."""
    with open(path, "rb") as f:
        head = f.read(len(OLE_MAGIC))
        if not head:  # Explorer's "New > Word document" is a file of 0 bytes
            return Skipped(path, EMPTY)
        digest = _sha256(f)
        try:
            if head == OLE_MAGIC and ext in (".docx", ".pptx"):
                raise _Bad(ENCRYPTED)
            try:
                zf = zipfile.ZipFile(f)
            except zipfile.BadZipFile:  # a zip's directory is at its end: one caught half-written has none
                zipped = head.startswith(b"PK")
                raise _Bad(f"not a valid {ext} file ({'truncated or corrupt' if zipped else 'not a'} zip)", zipped)
            with zf:
                title, body, meta = _READERS[ext](_Parts(zf, ext))
        except _Bad as e:
            return Skipped(path, str(e), e.transient)
    body = body.strip()
    if not body:
        return Skipped(path, EMPTY)
    meta = {"path": path, "type": ext[1:], **meta}
    text = titled(meta, title, body)
    return Document(path, path, meta, digest, lambda: split_text(text))


def _sha256(f) -> str:
    """The file's bytes hashed, streamed (a deck of videos can be a GB), from the open
    file the parts are then read from: both are of one file, even if it is replaced."""
    f.seek(0)
    h = hashlib.sha256()
    while block := f.read(SEGMENT_BYTES):
        h.update(block)
    f.seek(0)
    return h.hexdigest()


class _Parts:
    """The members of one archive, read within one budget of unpacked bytes."""

    def __init__(self, zf: zipfile.ZipFile, ext: str):
        self.zf, self.ext, self.left = zf, ext, MAX_UNPACKED

    def has(self, name: str) -> bool:
        return name in self.zf.NameToInfo

    def chunks(self, name: str) -> Iterator[bytes]:
        """A member's bytes in pieces, counted against the budget as they are unpacked
        (the size a header gives is checked first, and not trusted)."""
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise _Bad(f"not a valid {self.ext} file (no {name})") from None
        if info.flag_bits & 1:
            raise _Bad(ENCRYPTED)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Bad(f"not a valid {self.ext} file ({name}: unsupported compression)")
        if info.file_size > self.left:
            raise _Bad(TOO_BIG)
        try:
            with self.zf.open(info) as member:
                while block := member.read(1 << 16):
                    self.left -= len(block)
                    if self.left < 0:
                        raise _Bad(TOO_BIG)
                    yield block
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a bad CRC, a broken deflate stream
            raise _Bad(f"not a valid {self.ext} file ({name}: {e or type(e).__name__})") from None

    def read(self, name: str) -> bytes:
        return b"".join(self.chunks(name))

    def parse(self, name: str, start=None, end=None, data=None) -> None:
        """Run expat over a member with these handlers (element names without their namespace)."""
        p = expat.ParserCreate(namespace_separator=" ")
        p.buffer_text = True
        p.StartDoctypeDeclHandler = _no_internal_subset
        if start:
            p.StartElementHandler = lambda n, a: start(n.rpartition(" ")[2], a)
        if end:
            p.EndElementHandler = lambda n: end(n.rpartition(" ")[2])
        if data:
            p.CharacterDataHandler = data
        try:
            for block in self.chunks(name):
                p.Parse(block, False)
            p.Parse(b"", True)
        except expat.ExpatError as e:
            raise _Bad(f"not a valid {self.ext} file ({name}: {e})") from None
        except _DTD:
            raise _Bad(f"{name}: {DTD}") from None

    def elements(self, name: str) -> list[tuple[str, dict, str]]:
        """(name, attributes, text) of each element of a small part (rels, metadata)."""
        found, open_ = [], []

        def start(n, a):
            open_.append(len(found))
            found.append((n, a, []))

        self.parse(name, start, lambda n: open_.pop(), lambda s: open_ and found[open_[-1]][2].append(s))
        return [(n, a, "".join(t)) for n, a, t in found]

    def title(self, name: str) -> str:
        """The first dc:title of a metadata part, if the archive has that part."""
        if not self.has(name):
            return ""
        return next((t for n, _, t in self.elements(name) if n == "title" and t.strip()), "")


def _no_internal_subset(name, system_id, public_id, has_internal_subset):
    """A DOCTYPE alone (EPUB 2's XHTML starts with one) is harmless: expat loads no
    external DTD. An internal subset is where entities are declared: none of these
    formats needs one."""
    if has_internal_subset:
        raise _DTD


class _Text:
    """A part's text as expat reads it: the character data inside ``text`` elements,
    what a ``marks`` element stands for where it starts (a tab, a line break) and a
    newline where a ``lines`` element (a paragraph) ends; nothing inside ``skip``."""

    def __init__(self, text: set, marks: dict, lines: set, skip: set, collapse: bool = False):
        self.text, self.marks, self.lines, self.skip, self.collapse = text, marks, lines, skip, collapse
        self.out: list[str] = []
        self.inside = self.skipping = 0

    def start(self, name: str, attrs: dict) -> None:
        if self.skipping or name in self.skip:
            self.skipping += 1
        elif name in self.text:
            self.inside += 1
        elif name in self.marks:
            self.out.append(self.marks[name] * _count(attrs.get(_TEXT_C)))

    def end(self, name: str) -> None:
        if self.skipping:
            self.skipping -= 1
            return
        if name in self.text:
            self.inside -= 1
        if name in self.lines:
            self.out.append("\n")

    def data(self, s: str) -> None:
        if self.inside and not self.skipping:
            # ODF: the XML's own line breaks and runs of blanks are one space (<text:s> are spaces)
            self.out.append(re.sub(r"[ \t\r\n]+", " ", s) if self.collapse else s)

    def read(self, parts: _Parts, name: str) -> str:
        self.out = []
        parts.parse(name, self.start, self.end, self.data)
        return "".join(self.out)


def _count(c: str | None) -> int:
    try:
        return min(max(int(c), 1), MAX_SPACES) if c else 1
    except ValueError:
        return 1


def _resolve(base: str, href: str) -> str:
    """A member's name from a link relative to the part at ``base`` (rels, OPF: URL-quoted)."""
    href = unquote(href.split("#")[0])
    return posixpath.normpath(href.lstrip("/") if href.startswith("/") else posixpath.join(posixpath.dirname(base), href))


def _rels(parts: _Parts, part: str) -> dict[str, tuple[str, str]]:
    """Id -> (type, member name) of an OOXML part's relationships (word/_rels/document.xml.rels)."""
    folder, name = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", name + ".rels")
    if not parts.has(rels):
        return {}
    return {a.get("Id"): (a.get("Type", ""), _resolve(part, a.get("Target", "")))
            for n, a, _ in parts.elements(rels) if n == "Relationship" and a.get("TargetMode") != "External"}


# Word: w:t holds text; w:p is a paragraph (in table cells too); alternate content is there twice
_WORD = dict(text={"t"}, marks={"tab": "\t", "ptab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"},
             lines={"p"}, skip={"pPr", "rPr", "Fallback"})


def _docx(parts: _Parts) -> tuple[str, str, dict]:
    """Body, then footnotes and endnotes; the main part is where the package's rels say."""
    main = next((t for kind, t in _rels(parts, "").values() if kind.endswith("/officeDocument")), "word/document.xml")
    text = [_Text(**_WORD).read(parts, main)]
    for notes in ("footnotes.xml", "endnotes.xml"):
        if parts.has(name := posixpath.join(posixpath.dirname(main), notes)):
            text.append(_Text(**_WORD).read(parts, name))
    return parts.title("docProps/core.xml"), "\n\n".join(t.strip() for t in text if t.strip()), {}


def _pptx(parts: _Parts) -> tuple[str, str, dict]:
    """Slides in the order the presentation lists them (its sldIdLst), which is not their
    files' names: slide10.xml sorts before slide2.xml, and a slide moved keeps its name."""
    pres = "ppt/presentation.xml"
    rels = _rels(parts, pres)
    ids = (next((v for k, v in a.items() if k.endswith(" id")), None) for n, a, _ in parts.elements(pres)
           if n == "sldId")
    slides = [rels[i][1] for i in ids if i in rels and parts.has(rels[i][1])]
    drawing = dict(text={"t"}, marks={"br": "\n"}, lines={"p"}, skip={"Fallback"})
    text = [_Text(**drawing).read(parts, s).strip() for s in slides]
    return parts.title("docProps/core.xml"), "\n\n".join(t for t in text if t), {"slides": len(slides)}


def _odf(parts: _Parts) -> tuple[str, str, dict]:
    """An OpenDocument text (.odt) or presentation (.odp): text:p and text:h are paragraphs,
    their text at any depth (spans, links, a slide's frames); a slide (draw:page) ends with
    a blank line, as a .pptx's do; its speaker notes are left out, as a .pptx's are."""
    if parts.has("META-INF/manifest.xml") and b"encryption-data" in parts.read("META-INF/manifest.xml"):
        raise _Bad(ENCRYPTED)
    odf = _Text(text={"p", "h"}, marks={"s": " ", "tab": "\t", "line-break": "\n"}, lines={"p", "h", "page"},
                skip={"note-citation", "tracked-changes", "annotation", "notes"}, collapse=True)
    return parts.title("meta.xml"), odf.read(parts, "content.xml"), {}


def _epub(parts: _Parts) -> tuple[str, str, dict]:
    """The XHTML documents of the spine, in its order, through the HTML loader's parser."""
    container = parts.elements("META-INF/container.xml")
    opf = next((a.get("full-path") for n, a, _ in container if n == "rootfile" and a.get("full-path")), None)
    if opf is None:
        raise _Bad("not a valid .epub file (no package document)")
    package = parts.elements(_resolve("", opf))
    items = {a.get("id"): a for n, a, _ in package if n == "item"}
    spine = [items[a.get("idref")] for n, a, _ in package if n == "itemref" and a.get("idref") in items]
    docs = [_resolve(opf, a.get("href", "")) for a in spine
            if a.get("media-type") in ("application/xhtml+xml", "text/html")]
    if parts.has("META-INF/encryption.xml"):
        locked = {_resolve("", a.get("URI", "")) for n, a, _ in parts.elements("META-INF/encryption.xml")
                  if n == "CipherReference"}
        if locked & set(docs):  # fonts alone are often obfuscated; text locked is DRM
            raise _Bad("encrypted (DRM-protected) e-book")
    title = next((t for n, _, t in package if n == "title" and t.strip()), "")
    return title, "\n\n".join(filter(None, (_xhtml(parts, d) for d in docs if parts.has(d)))), {}


def _xhtml(parts: _Parts, name: str) -> str:
    """One XHTML document's text. expat reads only its prolog, for the DTD rule (its body
    may well not be XML: &nbsp; without a DTD); the HTML parser reads the rest."""
    data = parts.read(name)

    def stop(*_):
        raise _Done

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = _no_internal_subset
    p.StartElementHandler = stop
    try:
        p.Parse(data, True)
    except (_Done, expat.ExpatError):
        pass
    except _DTD:
        raise _Bad(f"{name}: {DTD}") from None
    html = _HTMLText()
    html.feed(decode_text(data)[0])
    html.close()
    return "".join(html.parts).strip()


class _Done(Exception):
    pass


_READERS: dict[str, Callable[[_Parts], tuple[str, str, dict]]] = {
    ".docx": _docx, ".pptx": _pptx, ".odt": _odf, ".odp": _odf, ".epub": _epub}
