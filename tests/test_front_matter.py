"""Markdown front matter (a YAML block on a .md file's first line) becomes the document's
metadata and leaves its text; the title goes before the body. Loader-level checks, then
the command line with the real model: filters on the fields, re-indexing on an edit."""
import hashlib
import json
import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from semsearch import loaders
from semsearch.cli import cli
from semsearch.loaders import MAX_FRONT_MATTER, SEGMENT_BYTES, Document, load_file

NOTE = """---
title: Login bug post-mortem
tags: [auth, incident]
date: 2024-03-05
updated: 2024-03-06 10:30:00
team: ops
draft: false
version: 3
score: 0.5
reviewer: ~
author:
  name: Ann
  address: {city: Oslo}
---
# What happened

Sessions expired early after the token refresh change.
"""
BODY = "# What happened\n\nSessions expired early after the token refresh change.\n"


def one(path) -> Document:
    (doc,) = load_file(str(path))
    assert isinstance(doc, Document), doc
    return doc


def text_of(doc: Document) -> str:
    return "".join(doc.segments())


def note(tmp_path, content, name="note.md", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return p


def test_fields_become_metadata_and_the_block_leaves_the_text(tmp_path):
    p = note(tmp_path, NOTE)
    doc = one(p)
    assert doc.metadata == {
        "path": str(p), "type": "md", "title": "Login bug post-mortem", "tags": ["auth", "incident"],
        "date": "2024-03-05", "updated": "2024-03-06T10:30:00", "team": "ops", "draft": False,
        "version": 3, "score": 0.5, "author.name": "Ann", "author.address.city": "Oslo"}
    assert text_of(doc) == "Login bug post-mortem\n" + BODY
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()  # of the file, block and all
    json.dumps(doc.metadata, allow_nan=False)


@pytest.mark.parametrize("prefix,encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"", "utf-16"), (b"", "cp1252")])
def test_a_bom_or_another_encoding_is_read_as_the_file_is(tmp_path, prefix, encoding):
    content = "---\r\ntitle: Café notes\r\nteam: ops\r\n---\r\nThe body, naïve.\r\n"
    doc = one(note(tmp_path, prefix + content.encode(encoding)))
    assert {k: doc.metadata[k] for k in ("title", "team")} == {"title": "Café notes", "team": "ops"}
    assert text_of(doc) == "Café notes\nThe body, naïve.\r\n"


def test_dots_end_the_block_and_an_empty_block_is_no_fields(tmp_path):
    doc = one(note(tmp_path, "---\nteam: ops\n...\nbody text\n"))
    assert doc.metadata["team"] == "ops" and text_of(doc) == "body text\n"
    doc = one(note(tmp_path, "---\n---\nbody text\n", "empty.md"))
    assert set(doc.metadata) == {"path", "type"} and text_of(doc) == "body text\n"
    doc = one(note(tmp_path, "---\nteam: ops\n---", "only.md"))  # the closing line ends the file
    assert doc.metadata["team"] == "ops" and text_of(doc) == ""
    doc = one(note(tmp_path, "---\ntitle: |\n  A title\n  on two lines\n---\n", "title.md"))
    assert list(doc.segments()) == ["A title on two lines\n"]
    assert doc.metadata["title"] == "A title on two lines"  # as an HTML or .docx title: loaders.titled


@pytest.mark.parametrize("content", [
    "---\ntitle: never closed\n\nbody text\n",  # no closing fence
    "intro\n---\nteam: ops\n---\nbody\n",  # not on the first line
    "--- \nfoo\n---\n",  # YAML of a string: a --- rule around text
    "---\n- a\n- b\n---\nbody\n",  # a list
    "----\nteam: ops\n----\nbody\n",
])
def test_what_is_no_front_matter_stays_plain_text(tmp_path, content, caplog):
    doc = one(note(tmp_path, content))
    assert set(doc.metadata) == {"path", "type"}
    assert text_of(doc) == content
    assert not caplog.records  # nothing to warn of: an ordinary Markdown file


@pytest.mark.parametrize("yaml_text,reason", [
    ("title: [unclosed\nteam: ops\n", "front matter not read"),
    ("team: ops\nweight: .inf\n", "holds inf"),
    ("big: 123456789012345678901234567890\n", "beyond 64 bits"),
    ("2024: a year as a key\n", "non-string key"),
    ("blob: !!binary aGVsbG8=\n", "holds a bytes"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "too many values"),
])
def test_front_matter_that_cannot_be_metadata_is_kept_as_text_and_warned_of(tmp_path, yaml_text, reason, caplog):
    content = f"---\n{yaml_text}---\nbody text\n"
    p = note(tmp_path, content)
    with caplog.at_level(logging.WARNING, "semsearch"):
        doc = one(p)
    assert set(doc.metadata) == {"path", "type"}
    assert text_of(doc) == content  # nothing lost
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{p}: front matter not read, indexed as plain text")
    assert reason in record.getMessage() and "\n" not in record.getMessage()


def test_the_loader_keeps_path_and_type(tmp_path):
    p = note(tmp_path, "---\npath: /elsewhere.md\ntype: post\nid: intro\nsource: wiki\n---\nbody\n")
    assert one(p).metadata == {"path": str(p), "type": "md", "id": "intro", "source": "wiki"}


def test_only_markdown_files_have_front_matter(tmp_path):
    content = "---\nteam: ops\n---\nbody\n"
    for name in ("a.txt", "a.rst"):
        doc = one(note(tmp_path, content, name))
        assert set(doc.metadata) == {"path", "type"} and text_of(doc) == content


def test_a_block_over_the_cap_stays_text(tmp_path, caplog):
    lines = "".join(f"k{i}: {'v' * 60}\n" for i in range(MAX_FRONT_MATTER // 60))
    content = f"---\n{lines}---\nbody text\n"
    with caplog.at_level(logging.WARNING, "semsearch"):
        doc = one(note(tmp_path, content))
    assert set(doc.metadata) == {"path", "type"} and text_of(doc) == content
    assert "no end of front matter in its first 64 KB" in caplog.records[0].getMessage()
    just_under = f"---\n{lines[:MAX_FRONT_MATTER - 100]}\n---\nbody text\n"
    doc = one(note(tmp_path, just_under, "under.md"))
    assert len(doc.metadata) > 500 and text_of(doc) == "body text\n"


def test_a_big_file_is_streamed_after_its_front_matter(tmp_path):
    body = "".join(f"line {i} of a long note about streaming text.\n" for i in range(120_000))  # ~5.6 MB
    p = note(tmp_path, f"---\ntitle: Big\nteam: ops\n---\n{body}")
    doc = one(p)
    segments = list(doc.segments())
    assert doc.metadata["team"] == "ops"
    assert segments[0].startswith("Big\nline 0 of") and len(segments) > 5
    assert max(map(len, segments)) < 2 * SEGMENT_BYTES  # read a piece at a time, never whole
    assert "".join(segments) == "Big\n" + body


def test_a_block_longer_than_a_segment_is_skipped_across_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "SEGMENT_BYTES", 1024)
    lines = "".join(f"k{i}: value {i}\n" for i in range(1000))  # ~14 KB: a dozen segments
    body = "words " * 2000
    doc = one(note(tmp_path, f"---\n{lines}---\n{body}"))
    segments = list(doc.segments())
    assert doc.metadata["k999"] == "value 999" and len(segments) > 10
    assert "".join(segments) == body


# ------------------------------------------------------------------ the command line

NOTES = {
    "login.md": NOTE,
    "billing.md": "---\ntitle: Invoice totals wrong\ntags: [billing]\ndate: 2024-01-20\nteam: finance\n---\n"
                  "Invoices summed taxes twice for customers in two regions.\n",
    "sso.md": "---\ntags: auth\ndate: 2023-11-02\nteam: ops\n---\nSingle sign-on with the identity provider.\n",
    "april.md": "---\ntags: [incident]\ndate: 2024-04-11T09:00:00Z\nteam: support\n---\nA printer caught fire.\n",
    "broken.md": "---\nteam: [ops\n---\nA note whose front matter does not parse.\n",
    "plain.txt": "---\ntags: [auth]\nteam: ops\n---\nA text file: its block is text.\n",
}


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def found(*args) -> list[str]:
    """The file names of the documents (`documents`) or hits (`search`) the command gives."""
    out = run(*args, "--json")
    items = json.loads(out) if args[0] == "search" else [json.loads(line) for line in out.splitlines()]
    return sorted(item["id"].rsplit("/", 1)[1] for item in items)


def index_notes(folder, notes: dict) -> subprocess.CompletedProcess:
    """``notes`` (file name -> text) written into ``folder`` and indexed as collection notes
    by a real `semsearch index` process, which must exit 0."""
    folder.mkdir()
    for name, text in notes.items():
        (folder / name).write_text(text)
    indexed = subprocess.run([sys.executable, "-m", "semsearch", "index", str(folder), "--name", "notes"],
                             capture_output=True, text=True)
    assert indexed.returncode == 0, indexed.stderr
    return indexed


def test_index_then_filter_on_front_matter(home, tmp_path):
    folder = tmp_path / "notes"
    indexed = index_notes(folder, NOTES)
    assert "added 6" in indexed.stdout
    assert f"warning: {folder / 'broken.md'}: front matter not read, indexed as plain text" in indexed.stderr

    assert found("search", "notes", "login problems", "--docs", "--where", "tags=auth") == ["login.md", "sso.md"]
    assert found("search", "notes", "what went wrong", "--docs", "--where", "date>=2024-03") == [
        "april.md", "login.md"]
    assert found("documents", "notes", "--where", "team=ops") == ["login.md", "sso.md"]
    assert found("documents", "notes", "--where", "author.name=Ann") == ["login.md"]
    assert found("documents", "notes", "--where", "type=md", "--where", "team!=ops") == [
        "april.md", "billing.md", "broken.md"]

    (got,) = [json.loads(line) for line in run("get", "notes", folder / "login.md", "--json").splitlines()]
    assert got["text"] == "Login bug post-mortem\n" + BODY.strip()  # one chunk: the title with the body
    (broken,) = [json.loads(line) for line in run("get", "notes", folder / "broken.md", "--json").splitlines()]
    assert broken["text"].startswith("---\nteam: [ops\n---\n")
    info = run("info", "notes")
    assert ("  metadata:  author.address.city, author.name, date, draft, path, score, tags, team, title, type, "
            "updated, version ") in info  # reviewer: ~ is no field

    billing = folder / "billing.md"
    billing.write_text(NOTES["billing.md"].replace("team: finance", "team: ops"))
    assert "added 0, updated 1, unchanged 5" in run("index", folder, "--name", "notes")
    assert found("documents", "notes", "--where", "team=ops") == ["billing.md", "login.md", "sso.md"]
    assert found("documents", "notes", "--where", "team=finance") == []
