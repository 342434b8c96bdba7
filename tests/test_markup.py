"""The headers of other notes formats become metadata as a Markdown file's YAML front
matter does (test_front_matter.py): Hugo's TOML front matter (+++), Org-mode's keyword
lines and file-level property drawer, AsciiDoc's document header; Markdown saved as
.markdown .mdown .mkd. Loader-level checks, then the command line with the real model."""
import hashlib
import json
import logging

import pytest

from semsearch.loaders import MAX_FRONT_MATTER, Document

from test_front_matter import found, index_notes, one, run, text_of


def note(tmp_path, name, content, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return p


def fields(doc: Document) -> dict:
    return {k: v for k, v in doc.metadata.items() if k not in ("path", "type")}


# ------------------------------------------------------------------ TOML front matter (Hugo)

TOML = """+++
title = "Login bug post-mortem"
tags = ["auth", "incident"]
date = 2024-03-05
updated = 2024-03-06T10:30:00
published = 2024-04-11T09:00:00Z
at = 10:30:00
team = "ops"
draft = false
weight = 3
score = 0.5
[author]
name = "Ann"
[author.address]
city = "Oslo"
[[links]]
url = "https://example.com"
+++
# What happened

Sessions expired early after the token refresh change.
"""
BODY = "# What happened\n\nSessions expired early after the token refresh change.\n"


def test_toml_front_matter_is_metadata_by_the_yaml_rules(tmp_path):
    p = note(tmp_path, "note.md", TOML)
    doc = one(p)
    assert doc.metadata == {
        "path": str(p), "type": "md", "title": "Login bug post-mortem", "tags": ["auth", "incident"],
        "date": "2024-03-05", "updated": "2024-03-06T10:30:00", "published": "2024-04-11T09:00:00+00:00",
        "at": "10:30:00", "team": "ops", "draft": False, "weight": 3, "score": 0.5,
        "author.name": "Ann", "author.address.city": "Oslo", "links": [{"url": "https://example.com"}]}
    assert text_of(doc) == "Login bug post-mortem\n" + BODY
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("prefix,encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"", "utf-16")])
def test_toml_with_crlf_and_a_bom(tmp_path, prefix, encoding):
    content = '+++\r\ntitle = "Café notes"\r\nteam = "ops"\r\n+++\r\nThe body, naïve.\r\n'
    doc = one(note(tmp_path, "note.md", prefix + content.encode(encoding)))
    assert fields(doc) == {"title": "Café notes", "team": "ops"}
    assert text_of(doc) == "Café notes\nThe body, naïve.\r\n"


def test_toml_header_only_and_empty(tmp_path):
    doc = one(note(tmp_path, "only.md", '+++\ntitle = "Just a title"\n+++'))
    assert fields(doc) == {"title": "Just a title"} and list(doc.segments()) == ["Just a title\n"]
    doc = one(note(tmp_path, "empty.md", "+++\n+++\nbody text\n"))
    assert fields(doc) == {} and text_of(doc) == "body text\n"


@pytest.mark.parametrize("content", [
    '+++\ntitle = "never closed"\n\nbody text\n',
    'intro\n+++\nteam = "ops"\n+++\nbody\n',
    '++++\nteam = "ops"\n++++\nbody\n',
])
def test_what_is_no_toml_front_matter_stays_text(tmp_path, content, caplog):
    doc = one(note(tmp_path, "note.md", content))
    assert fields(doc) == {} and text_of(doc) == content
    assert not caplog.records


@pytest.mark.parametrize("toml_text,reason", [
    ('title = "unclosed\nteam = "ops"\n', "front matter not read"),
    ("weight = inf\n", "holds inf"),
    ("big = 123456789012345678901234567890\n", "beyond 64 bits"),
    ('team = "ops"\nteam = "dev"\n', "front matter not read"),
])
def test_invalid_toml_stays_text_with_a_warning(tmp_path, toml_text, reason, caplog):
    content = f"+++\n{toml_text}+++\nbody text\n"
    p = note(tmp_path, "note.md", content)
    with caplog.at_level(logging.WARNING, "semsearch"):
        doc = one(p)
    assert fields(doc) == {} and text_of(doc) == content
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{p}: front matter not read, indexed as plain text")
    assert reason in record.getMessage() and "\n" not in record.getMessage()


def test_toml_over_the_cap_stays_text(tmp_path, caplog):
    lines = "".join(f'k{i} = "{"v" * 60}"\n' for i in range(MAX_FRONT_MATTER // 60))
    content = f"+++\n{lines}+++\nbody text\n"
    with caplog.at_level(logging.WARNING, "semsearch"):
        doc = one(note(tmp_path, "note.md", content))
    assert fields(doc) == {} and text_of(doc) == content
    assert "no end of front matter in its first 64 KB" in caplog.records[0].getMessage()


def test_the_loader_keeps_path_and_type_of_toml(tmp_path):
    p = note(tmp_path, "note.md", '+++\npath = "/x.md"\ntype = "post"\nid = "intro"\nsource = "wiki"\n+++\nb\n')
    assert one(p).metadata == {"path": str(p), "type": "md", "id": "intro", "source": "wiki"}


@pytest.mark.parametrize("ext", ["markdown", "mdown", "mkd", "MARKDOWN"])
def test_other_markdown_extensions_are_read_as_md(tmp_path, ext):
    p = note(tmp_path, f"note.{ext}", "---\ntitle: A note\ntags: [a]\n---\nbody\n")
    assert one(p).metadata == {"path": str(p), "type": ext.lower(), "title": "A note", "tags": ["a"]}
    p = note(tmp_path, f"hugo.{ext}", TOML)
    assert one(p).metadata["author.address.city"] == "Oslo" and text_of(one(p)) == "Login bug post-mortem\n" + BODY


def test_plain_text_has_no_toml_front_matter(tmp_path):
    for name in ("a.txt", "a.rst", "a.org", "a.adoc"):
        doc = one(note(tmp_path, name, TOML))
        assert fields(doc) == {} and text_of(doc) == TOML


# ------------------------------------------------------------------ Org-mode

ORG = """:PROPERTIES:
:ID:       6f1c2a9e-1b2d-4c3e-9f00-aa11bb22cc33
:CREATED:  [2024-03-01 Fri 09:15]
:ROAM_ALIASES: "Token bug"
:END:
#+TITLE: Login bug post-mortem
#+date: <2024-03-05 Tue>
#+FILETAGS: :auth:incident:
#+AUTHOR: Ann
#+Team: ops
#+STARTUP:

* What happened :urgent:
:PROPERTIES:
:OWNER: Bob
:END:
Sessions expired early after the token refresh change.
"""
ORG_BODY = "\n* What happened :urgent:\n:PROPERTIES:\n:OWNER: Bob\n:END:\n" \
           "Sessions expired early after the token refresh change.\n"


def test_org_header_is_metadata_and_leaves_the_text(tmp_path):
    p = note(tmp_path, "login.org", ORG)
    doc = one(p)
    assert doc.metadata == {
        "path": str(p), "type": "org", "id": "6f1c2a9e-1b2d-4c3e-9f00-aa11bb22cc33",
        "created": "2024-03-01T09:15:00", "roam_aliases": '"Token bug"', "title": "Login bug post-mortem",
        "date": "2024-03-05", "tags": ["auth", "incident"], "author": "Ann", "team": "ops"}
    assert text_of(doc) == "Login bug post-mortem\n" + ORG_BODY  # a heading's own tags and drawer stay text
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()


def test_org_header_with_crlf_and_a_bom(tmp_path):
    content = "\ufeff#+TITLE: Café\r\n#+DATE: [2024-03-05 Tue 10:30]\r\n\r\nBody, naïve.\r\n"
    doc = one(note(tmp_path, "n.org", content))
    assert fields(doc) == {"title": "Café", "date": "2024-03-05T10:30:00"}
    assert text_of(doc) == "Café\n\r\nBody, naïve.\r\n"


@pytest.mark.parametrize("content", [
    "* A heading first\n#+TITLE: not a header\nbody\n",
    "Just a note, no header.\n#+TITLE: too late\n",
    ":PROPERTIES:\n:ID: abc\n* no :END: before the heading\n",
    "#+BEGIN_SRC python\nprint(1)\n#+END_SRC\n",
    "#+NAME: table\n| a | b |\n",  # a keyword of the element after it
])
def test_what_is_no_org_header_stays_text(tmp_path, content, caplog):
    doc = one(note(tmp_path, "n.org", content))
    assert fields(doc) == {} and text_of(doc) == content
    assert not caplog.records


def test_org_header_only_and_repeated_keywords(tmp_path):
    doc = one(note(tmp_path, "only.org", "#+TITLE: Only a title\n"))
    assert fields(doc) == {"title": "Only a title"} and list(doc.segments()) == ["Only a title\n"]
    content = ("#+TITLE: A long\n#+TITLE: title\n#+FILETAGS: :a:b:\n#+FILETAGS: c\n#+TAGS: x y z\n"
               "#+NAME: tbl\n| 1 |\n")
    doc = one(note(tmp_path, "rep.org", content))
    assert fields(doc) == {"title": "A long title", "tags": ["a", "b", "c"]}  # #+TAGS: the tags one may use
    assert text_of(doc) == "A long title\n#+NAME: tbl\n| 1 |\n"


def test_org_timestamps(tmp_path):
    content = ("#+DATE: <2024-03-05 Tue 10:30-11:00 +1w>\n#+CREATED: [2024-03-01]\n#+DUE: <2024-02-30 Fri>\n"
               "#+SEEN: March 2024\n#+DAY: <2024-03-05 mar.>\nbody\n")
    doc = one(note(tmp_path, "n.org", content))
    assert fields(doc) == {"date": "2024-03-05T10:30:00", "created": "2024-03-01", "due": "<2024-02-30 Fri>",
                           "seen": "March 2024", "day": "2024-03-05"}
    assert text_of(doc) == "body\n"


def test_org_header_over_the_cap_stays_text(tmp_path, caplog):
    lines = "".join(f"#+K{i}: {'v' * 60}\n" for i in range(MAX_FRONT_MATTER // 60))
    content = f"{lines}\nbody text\n"
    with caplog.at_level(logging.WARNING, "semsearch"):
        doc = one(note(tmp_path, "big.org", content))
    assert fields(doc) == {} and text_of(doc) == content
    assert "no end of front matter in its first 64 KB" in caplog.records[0].getMessage()


def test_org_loader_keeps_path_and_type(tmp_path):
    p = note(tmp_path, "n.org", "#+PATH: /x\n#+TYPE: post\n#+SOURCE: wiki\nbody\n")
    assert one(p).metadata == {"path": str(p), "type": "org", "source": "wiki"}


# ------------------------------------------------------------------ AsciiDoc

ADOC = """= Login bug post-mortem
Ann Lee <ann@example.com>; Bob Stone
v1.2, 2024-03-05: Reviewed
:tags: auth, incident
:keywords: login,  sessions,
:Team: ops
:toc:
:description: What went wrong \\
  with the tokens.

== What happened

Sessions expired early after the token refresh change.
"""
ADOC_BODY = "\n== What happened\n\nSessions expired early after the token refresh change.\n"


def test_asciidoc_header_is_metadata_and_leaves_the_text(tmp_path):
    p = note(tmp_path, "login.adoc", ADOC)
    doc = one(p)
    assert doc.metadata == {
        "path": str(p), "type": "adoc", "title": "Login bug post-mortem", "author": ["Ann Lee", "Bob Stone"],
        "email": "ann@example.com", "revnumber": "1.2", "revdate": "2024-03-05", "revremark": "Reviewed",
        "tags": ["auth", "incident"], "keywords": ["login", "sessions"], "team": "ops",
        "description": "What went wrong with the tokens."}
    assert text_of(doc) == "Login bug post-mortem\n" + ADOC_BODY
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()


def test_asciidoc_header_shapes(tmp_path):
    doc = one(note(tmp_path, "a.asciidoc", "// draft\n= Title\nAnn\n2024-03-05\n:draft!:\n\nBody\n"))
    assert doc.metadata["type"] == "asciidoc"
    assert fields(doc) == {"title": "Title", "author": "Ann", "revdate": "2024-03-05"}
    assert text_of(doc) == "Title\n\nBody\n"
    doc = one(note(tmp_path, "b.adoc", ":tags: a\n:status: draft\n\nBody\n"))  # attributes, no title
    assert fields(doc) == {"tags": ["a"], "status": "draft"} and text_of(doc) == "\nBody\n"
    doc = one(note(tmp_path, "c.adoc", "= Only a title\n"))
    assert fields(doc) == {"title": "Only a title"} and list(doc.segments()) == ["Only a title\n"]
    doc = one(note(tmp_path, "d.adoc", "= T\n:source: wiki\n:type: x\n:path: y\n"))
    assert doc.metadata == {"path": str(tmp_path / "d.adoc"), "type": "adoc", "title": "T", "source": "wiki"}


def test_asciidoc_header_with_crlf_and_a_bom(tmp_path):
    content = "\ufeff= Café\r\n:date: 2024-03-05\r\n\r\nBody, naïve.\r\n"
    doc = one(note(tmp_path, "n.adoc", content))
    assert fields(doc) == {"title": "Café", "date": "2024-03-05"}
    assert text_of(doc) == "Café\n\r\nBody, naïve.\r\n"


@pytest.mark.parametrize("content", [
    "Just text.\n= Not a title\n",
    "== A section first\n\nBody\n",
    "// only a comment\n\nBody\n",
])
def test_what_is_no_asciidoc_header_stays_text(tmp_path, content, caplog):
    doc = one(note(tmp_path, "n.adoc", content))
    assert fields(doc) == {} and text_of(doc) == content
    assert not caplog.records


# ------------------------------------------------------------------ the command line

NOTES = {
    "login.org": ORG,
    "billing.adoc": "= Invoice totals wrong\nCarl\n:tags: billing\n:date: 2024-01-20\n:team: finance\n\n"
                    "Invoices summed taxes twice for customers in two regions.\n",
    "sso.md": '+++\ntags = ["auth"]\ndate = 2023-11-02\nteam = "ops"\n+++\nSingle sign-on with the identity provider.\n',
    "april.markdown": "---\ntags: [incident]\ndate: 2024-04-11\nteam: support\n---\nA printer caught fire.\n",
    "plain.txt": '+++\ntags = ["auth"]\n+++\nA text file: its block is text.\n',
}


def test_index_then_filter_on_org_asciidoc_and_toml_headers(home, tmp_path):
    folder = tmp_path / "notes"
    indexed = index_notes(folder, NOTES)
    assert "added 5" in indexed.stdout and "warning" not in indexed.stderr

    assert found("search", "notes", "login problems", "--docs", "--where", "tags=auth") == ["login.org", "sso.md"]
    assert found("search", "notes", "what went wrong", "--docs", "--where", "date>=2024-03") == [
        "april.markdown", "login.org"]
    assert found("documents", "notes", "--where", "team=ops") == ["login.org", "sso.md"]
    assert found("documents", "notes", "--where", "metadata.id=6f1c2a9e-1b2d-4c3e-9f00-aa11bb22cc33") == [
        "login.org"]
    assert found("documents", "notes", "--where", "type=adoc") == ["billing.adoc"]
    assert found("documents", "notes", "--where", "author=Carl") == ["billing.adoc"]

    (got,) = [json.loads(line) for line in run("get", "notes", folder / "login.org", "--json").splitlines()]
    assert got["text"] == "Login bug post-mortem\n" + ORG_BODY.rstrip()
    assert found("search", "notes", "token refresh", "--docs", "--where", "tags=incident") == [
        "april.markdown", "login.org"]

    billing = folder / "billing.adoc"  # only the header changes
    billing.write_text(NOTES["billing.adoc"].replace(":team: finance", ":team: ops"))
    assert "added 0, updated 1, unchanged 4" in run("index", folder, "--name", "notes")
    assert found("documents", "notes", "--where", "team=ops") == ["billing.adoc", "login.org", "sso.md"]
