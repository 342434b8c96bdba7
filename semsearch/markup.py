"""The headers of notes formats other than YAML front matter: Hugo's TOML front matter,
Org-mode's file-level keywords and property drawer, AsciiDoc's document header.

Each reader is given the decoded head of a file (whole lines; ``whole``: the file's end is
in it) and returns None where the file has no header, else (characters the header takes,
its fields). loaders._front_matter makes the fields metadata, by the one rule for YAML and
these alike; a ValueError says why a header cannot be, and NoEnd that it runs past the head.
"""
from __future__ import annotations

import datetime
import re


class NoEnd(Exception):
    """A header starts in the head of the file but does not end there."""


def _lines(head: str):
    """(start, end, text less its line break) of each line, positions in ``head``."""
    for m in re.finditer(r"[^\n]*\n|[^\n]+", head):
        yield m.start(), m.end(), m.group().rstrip("\r\n")


# ---------------------------------------------------------------- TOML (Hugo)

_TOML = re.compile(r"\+\+\+[ \t]*\r?\n(.*?)^\+\+\+[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


def toml_header(head: str, whole: bool) -> tuple[int, dict] | None:
    """A ``+++`` first line up to a ``+++`` line: TOML, whose dates are datetime objects."""
    if not re.match(r"\+\+\+[ \t]*\r?\n", head):
        return None
    match = _TOML.match(head)
    if match is None:
        if whole:
            return None  # never closed: a +++ line of text
        raise NoEnd
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return match.end(), tomllib.loads(match.group(1))  # TOMLDecodeError is a ValueError


# ---------------------------------------------------------------- Org-mode

_KEYWORD = re.compile(r"[ \t]*#\+([^\s:]+):[ \t]*(.*?)[ \t]*")
_PROPERTY = re.compile(r"[ \t]*:([^\s:]+):(?:[ \t]+(.*?))?[ \t]*")
# keywords of what follows them (a table's #+NAME:, a dynamic block's #+BEGIN:), not of the file
_NOT_FILE = re.compile(r"(caption|header|name|plot|results|attr_\w+|begin)(\[.*\])?", re.IGNORECASE)
_TIMESTAMP = re.compile(r"[<\[](\d{4}-\d\d-\d\d)(?: +[^\d\s>\]]+)?(?: +(\d{1,2}:\d\d))?[^<>\[\]]*[>\]]")


def org_header(head: str, whole: bool) -> tuple[int, dict] | None:
    """The file's leading ``#+KEY: value`` lines and its ``:PROPERTIES:`` drawer, blank
    lines between them, up to the first other line (a heading, text). Keys lowercased;
    a repeated keyword's values are joined (a title on two lines); FILETAGS ``:a:b:`` are
    ``tags``; #+TAGS (the tags one may use in the file) is no field; a value that is
    one Org timestamp is a date. Headings' own tags and drawers stay text."""
    values: dict[str, list[str]] = {}
    end = 0
    lines = _lines(head)
    for _, stop, line in lines:
        if not line.strip():
            continue
        keyword = _KEYWORD.fullmatch(line)
        if keyword and not _NOT_FILE.fullmatch(keyword[1]):
            values.setdefault(keyword[1].lower(), []).append(keyword[2])
        elif line.strip().upper() == ":PROPERTIES:" and (drawer := _drawer(lines)) is not None:
            stop, properties = drawer
            for key, value in properties:
                values.setdefault(key, []).append(value)
        else:
            return (end, _org_fields(values)) if end else None
        end = stop
    if not whole and end:
        raise NoEnd
    return (end, _org_fields(values)) if end else None


def _drawer(lines) -> tuple[int, list] | None:
    """(end, [(key, value)]) of a property drawer's lines after :PROPERTIES:, up to :END:;
    None where a line before it is no property (so no drawer: text)."""
    properties = []
    for _, stop, line in lines:
        match = _PROPERTY.fullmatch(line)
        if match is None:
            return None
        if match[1].upper() == "END":
            return stop, properties
        properties.append((match[1].lower().removesuffix("+"), match[2] or ""))  # KEY+: adds to KEY
    return None


def _org_fields(values: dict[str, list[str]]) -> dict:
    out = {}
    tags = " ".join(values.pop("filetags", []))
    if tags:
        out["tags"] = [t for t in re.split(r"[:\s]+", tags) if t]
    values.pop("tags", None)
    for key, parts in values.items():
        value = " ".join(p for p in parts if p)
        out.setdefault(key, _org_value(value) if value else None)  # empty: left out, as YAML's ~
    return out


def _org_value(value: str):
    """An Org timestamp ``<2024-03-05 Tue>``, ``[2024-03-05 Tue 10:30]`` as a date or
    datetime (a range or repeater after the time is left out); other text as it is."""
    match = _TIMESTAMP.fullmatch(value)
    try:
        if match and match[2]:
            return datetime.datetime.fromisoformat(f"{match[1]}T{match[2]:0>5}")
        if match:
            return datetime.date.fromisoformat(match[1])
    except ValueError:  # 2024-02-30: text
        pass
    return value


# ---------------------------------------------------------------- AsciiDoc

_ATTRIBUTE = re.compile(r":(!?)(\w[\w-]*)(!?):(?:[ \t]+(.*?))?[ \t]*")
_TITLE = re.compile(r"=[ \t]+(.*?)[ \t]*")
_COMMENT = re.compile(r"//(?!//).*")  # a line comment; //// opens a block
_AUTHOR = re.compile(r"(.*?)(?:\s*<([^>]*)>)?")
LISTS = ("tags", "keywords")  # comma-separated attributes read as lists


def adoc_header(head: str, whole: bool) -> tuple[int, dict] | None:
    """The document header as Asciidoctor reads it, up to the first blank or other line:
    ``= Title``, the line after it the authors (``Name <email>; Name``), the next the
    revision (``v1.2, 2024-03-05: remark``), ``:name: value`` attributes (before the title
    too; a value ending in a backslash goes on on the next line; ``:name!:`` unsets),
    ``//`` comments. Names lowercased; :tags: and :keywords: are comma lists."""
    out, end, header, expect = {}, 0, False, "title"
    going_on = None  # the attribute the next line goes on with
    for _, stop, line in _lines(head):
        if going_on:
            out[going_on] = f"{out[going_on]} {line.strip()}"
        elif not line.strip():
            if header:
                break
            continue  # blank lines before the header
        elif _COMMENT.fullmatch(line):
            pass
        elif match := _ATTRIBUTE.fullmatch(line):
            out.pop(name := match[2].lower(), None)
            if not (match[1] or match[3]):
                out[name], going_on = match[4] or "", name
            header, expect = True, "title" if expect == "title" else ""
        elif expect == "title" and (match := _TITLE.fullmatch(line)):
            out["title"], header, expect = match[1], True, "author"
        elif expect == "author":
            _authors(out, line)
            expect = "revision"
        elif expect == "revision":
            _revision(out, line)
            expect = ""
        else:
            break
        if going_on and out[going_on].endswith("\\"):
            out[going_on] = out[going_on][:-1].rstrip()
        else:
            going_on = None
        end = stop
    else:
        if header and not whole:
            raise NoEnd
    if not header:
        return None  # comments alone are text
    for name in LISTS:
        if name in out:
            out[name] = [item.strip() for item in out[name].split(",") if item.strip()]
    return end, {key: value if value != "" else None for key, value in out.items()}  # empty: left out


def _authors(out: dict, line: str) -> None:
    """``author`` and ``email``: a text for one, a list for several."""
    names, emails = [], []
    for author in line.split(";"):
        name, email = _AUTHOR.fullmatch(author.strip()).groups()
        names += [" ".join(name.split())] if name.strip() else []
        emails += [email.strip()] if email and email.strip() else []
    for key, items in (("author", names), ("email", emails)):
        if items:
            out[key] = items[0] if len(items) == 1 else items


def _revision(out: dict, line: str) -> None:
    """Asciidoctor's revision line: ``number, date: remark``; without a comma a ``v1.2``
    is the number, anything else the date."""
    number, comma, rest = line.partition(",")
    if not comma:
        number, rest = "", line
    date, _, remark = rest.partition(":")
    if not comma and re.match(r"v\d", date.strip()):
        number, date = date, ""
    for key, value in (("revnumber", re.sub(r"^[^\d{]*", "", number.strip())), ("revdate", date.strip()),
                       ("revremark", remark.strip())):
        if value:
            out[key] = value
