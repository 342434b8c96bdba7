import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semsearch.errors import InvalidInput, NotFound
from semsearch.loaders import Document, Skipped, iter_documents, read_records


def load(*paths, glob=None):
    return list(iter_documents(paths, glob=glob))


def text_of(doc: Document) -> str:
    return "".join(doc.segments())


def one_doc(path) -> Document:
    (doc,) = load(path)
    assert isinstance(doc, Document), doc
    return doc


@pytest.mark.parametrize("ext", [".txt", ".md", ".rst"])
def test_plain_text_file(tmp_path, ext):
    p = tmp_path / f"notes{ext}"
    p.write_text("# Title\n\nSome words about search.\n", encoding="utf-8")
    doc = one_doc(p)
    assert doc.key == doc.source == str(p)
    assert doc.metadata == {"path": str(p), "type": ext[1:]}
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()
    assert text_of(doc) == "# Title\n\nSome words about search.\n"
    assert text_of(doc) == text_of(doc)  # segments can be read again


def test_utf8_bom_is_stripped(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfhello world")
    assert text_of(one_doc(p)) == "hello world"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_files_with_a_byte_order_mark_are_read_not_called_binary(tmp_path, encoding):
    files = {"notes.txt": "naïve café notes\n", "page.html": "<p>naïve café page</p>",
             "rows.csv": "id,text\n1,naïve café row\n", "recs.jsonl": '{"text": "naïve café record"}\n',
             "one.json": '{"text": "naïve café object"}', "blank.md": " \n\t"}
    for name, text in files.items():
        (tmp_path / name).write_bytes(("\ufeff" + text).encode(encoding))
    docs = load(tmp_path)
    assert docs[0] == Skipped(str(tmp_path / "blank.md"), "empty file")
    assert [text_of(d).strip() for d in docs[1:]] == [
        "naïve café notes", "naïve café object", "naïve café page", "naïve café record", "naïve café row"]
    assert all(d.replaced_chars == 0 for d in docs[1:])


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_undecodable_utf16_is_replaced_and_counted_a_real_fffd_is_not(tmp_path, encoding):
    """UTF-16's undecodable bytes (an unpaired surrogate, a last odd byte) became U+FFFD
    but were counted as U+FFFD the file holds: the report said nothing was replaced."""
    lone = "\ud800".encode(encoding, "surrogatepass")
    files = {"notes.txt": ("naïve ", " notes \ufffd\n"), "page.html": ("<p>naïve ", " page \ufffd</p>"),
             "rows.csv": ("id,text\n1,naïve ", " row \ufffd\n"), "recs.jsonl": ('{"text": "naïve ', ' record \ufffd"}\n'),
             "one.json": ('{"text": "naïve ', ' object \ufffd"}')}
    for name, (before, after) in files.items():
        (tmp_path / name).write_bytes(("\ufeff" + before).encode(encoding) + lone + after.encode(encoding))
    (tmp_path / "odd.md").write_bytes("\ufeffodd byte".encode(encoding) + b"x")
    docs = load(tmp_path)
    assert [(text_of(d).strip(), d.replaced_chars) for d in docs] == [
        ("naïve \ufffd notes \ufffd", 1), ("odd byte\ufffd", 1), ("naïve \ufffd object \ufffd", 1),
        ("naïve \ufffd page \ufffd", 1), ("naïve \ufffd record \ufffd", 1), ("naïve \ufffd row \ufffd", 1)]


def test_a_legacy_8bit_file_is_read_as_windows_1252(tmp_path):
    """A file that is not UTF-8 (old Windows tools: cp1252, Latin-1) lost every accented
    letter and curly quote to U+FFFD; its hash stays that of its bytes."""
    words = "“Naïve” café – crème brûlée for 5 € \x81"  # 0x81: undefined in cp1252, Latin-1's
    raw = words[:-1].encode("cp1252") + b"\x81"
    files = {"notes.txt": b"%s notes\n", "page.html": b"<p>%s page</p>", "rows.csv": b"id,text\n1,%s row\n",
             "recs.jsonl": b'{"text": "%s record"}\n', "one.json": b'{"text": "%s object"}'}
    for name, template in files.items():
        (tmp_path / name).write_bytes(template % raw)
    docs = load(tmp_path)
    assert [(text_of(d).strip(), d.replaced_chars) for d in docs] == [
        (f"{words} notes", 0), (f"{words} object", 0), (f"{words} page", 0), (f"{words} record", 0),
        (f"{words} row", 0)]
    assert docs[0].content_hash == hashlib.sha256(b"%s notes\n" % raw).hexdigest()


def test_a_file_not_utf8_only_past_its_first_megabyte_is_read_as_windows_1252(tmp_path):
    late = "café “quoted”".encode("cp1252")
    (tmp_path / "late.txt").write_bytes(b"word " * 300_000 + late)
    (tmp_path / "late.jsonl").write_bytes(b'{"text": "word"}\n' * 70_000 + b'{"text": "%s"}\n' % late)
    records, doc = load(tmp_path / "late.jsonl"), one_doc(tmp_path / "late.txt")
    assert text_of(doc).endswith(" word café “quoted”") and doc.replaced_chars == 0
    assert text_of(records[-1]) == "café “quoted”" and records[-1].replaced_chars == 0


def test_only_text_that_looks_like_windows_1252_is_read_as_it(tmp_path):
    """A UTF-8 file with one stray byte, or Russian in its own 8-bit code page, read as
    cp1252 would be plausible-looking nonsense ('cafÃ©', 'Ïðèâåò'), not reported; as UTF-8
    only the bytes that do not decode are lost, and they are counted."""
    (tmp_path / "mostly.txt").write_bytes("café crème, déjà vu".encode() + b" stray \xe9 byte")
    (tmp_path / "russian.txt").write_bytes("Привет, как дела? Всё хорошо.".encode("cp1251"))
    mostly, russian = load(tmp_path)
    assert text_of(mostly) == "café crème, déjà vu stray \ufffd byte" and mostly.replaced_chars == 1
    assert "Ï" not in text_of(russian) and russian.replaced_chars > 10


def test_a_file_that_says_utf8_by_its_bom_keeps_it_bad_bytes_are_replaced_and_counted(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf" + "café crème brûlée".encode("latin-1") + " real \ufffd stays".encode())
    doc = one_doc(p)
    assert text_of(doc) == "caf\ufffd cr\ufffdme br\ufffdl\ufffde real \ufffd stays"
    assert doc.replaced_chars == 4  # the genuine U+FFFD in the file is not counted


def test_html_strips_tags_scripts_and_takes_title(tmp_path):
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>My  Page</title><style>body{color:red}</style></head>"
        "<body><h1>Heading</h1><p>Para &amp; text</p><script>var x = 1;</script></body></html>"
    )
    doc = one_doc(p)
    text = text_of(doc)
    assert doc.metadata["title"] == "My Page" and doc.metadata["type"] == "html"
    assert "Heading" in text and "Para & text" in text
    assert "color" not in text and "var x" not in text and "<" not in text


def test_html_table_cells_and_other_blocks_do_not_run_words_together(tmp_path):
    p = tmp_path / "table.html"
    p.write_text("<table><tr><th>Name</th><th>Role</th></tr><tr><td>Ada</td><td>engineer</td></tr></table>"
                 "<dl><dt>term</dt><dd>meaning</dd></dl><blockquote>one</blockquote><blockquote>two</blockquote>"
                 "<p>in<b>line</b> <a href='#'>link</a>s stay whole</p>")
    assert text_of(one_doc(p)).split() == ["Name", "Role", "Ada", "engineer", "term", "meaning", "one", "two",
                                           "inline", "links", "stay", "whole"]


def test_jsonl_records_with_ids_titles_and_metadata(tmp_path):
    p = tmp_path / "data.jsonl"
    rows = [
        {"id": "a1", "title": "First", "text": "alpha body", "tags": ["x"], "meta": {"n": 1}},
        {"content": "beta body", "lang": "en"},
        {"_id": 7, "body": "gamma body"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load(p)
    assert [d.key for d in docs] == [f"{p}#a1", f"{p}#2", f"{p}#7"]
    assert text_of(docs[0]) == "First\nalpha body"
    assert docs[0].metadata == {"id": "a1", "title": "First", "tags": ["x"], "meta": {"n": 1}}
    assert docs[1].metadata == {"lang": "en"} and text_of(docs[1]) == "beta body"
    assert all(d.source == str(p) for d in docs)
    assert len({d.content_hash for d in docs}) == 3


def test_jsonl_bad_lines_are_skipped_with_line_number(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"text": "good"}\n{not json\n{"title": "no text"}\n{"text": "also good"}\n')
    out = load(p)
    assert [type(x) for x in out] == [Document, Skipped, Skipped, Document]
    assert out[1] == Skipped(f"{p}:2", "invalid JSON")
    assert out[2] == Skipped(f"{p}:3", "no text field")


def test_jsonl_duplicate_id_is_skipped(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"id": 1, "text": "one"}\n{"id": 1, "text": "again"}\n')
    out = load(p)
    assert isinstance(out[0], Document) and out[1] == Skipped(f"{p}:2", "duplicate id 1")
    p = tmp_path / "a#b" / "dup.jsonl"  # a '#' in the id or the path: the id named whole
    p.parent.mkdir()
    p.write_text('{"id": "x#1", "text": "one"}\n{"id": "x#1", "text": "again"}\n')
    assert load(p)[1] == Skipped(f"{p}:2", "duplicate id x#1")


def test_read_records_raises_with_line_number(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n\n[1, 2]\n')
    it = read_records(p)
    assert next(it) == {"a": 1}
    with pytest.raises(ValueError, match="line 3"):
        next(it)
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        list(read_records(p))


def test_json_list_and_single_object(tmp_path):
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{"id": "x", "text": "one"}, {"text": "two"}, 5]))
    out = load(many)
    assert [d.key for d in out[:2]] == [f"{many}#x", f"{many}#2"]
    assert isinstance(out[2], Skipped)
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"body": "only one", "author": "me"}))
    doc = one_doc(single)
    assert text_of(doc) == "only one" and doc.metadata == {"author": "me"}


def test_csv_rows_become_documents(tmp_path):
    p = tmp_path / "table.csv"
    p.write_text('id,Text,lang\nr1,"first, row",en\n,second row,de\n')
    docs = load(p)
    assert [d.key for d in docs] == [f"{p}#r1", f"{p}#2"]
    assert text_of(docs[0]) == "first, row" and docs[0].metadata == {"id": "r1", "lang": "en"}


@pytest.mark.parametrize("name, sep", [("excel.csv", ";"), ("tabs.csv", "\t"), ("pipes.csv", "|"), ("data.tsv", "\t")])
def test_csv_delimiter_is_taken_from_the_header_line(tmp_path, name, sep):
    """Excel in many European locales writes ';': such a file (or one separated by tabs or
    pipes) was 'no text column'."""
    p = tmp_path / name
    p.write_text(f'id{sep}"note, short"{sep}text\nr1{sep}n{sep}first, row\n')
    (doc,) = load(p)
    assert text_of(doc) == "first, row" and doc.metadata == {"id": "r1", "note, short": "n"}


def test_a_tsv_file_of_one_column_keeps_its_commas(tmp_path):
    p = tmp_path / "one.tsv"
    p.write_text("text\nhello, world\n")
    assert text_of(one_doc(p)) == "hello, world"


def test_csv_without_text_column_is_skipped(tmp_path):
    p = tmp_path / "numbers.csv"
    p.write_text("a,b\n1,2\n")
    assert load(p) == [Skipped(str(p), "no text column")]


def _minimal_pdf(text: str, second_page: bytes | None = None) -> bytes:
    """A PDF with a page with a text object (and a second page of ``second_page``'s
    stream dictionary entries), xref offsets computed properly."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
    pages = [(b"", stream)] + ([] if second_page is None else [(second_page, b"xx")])
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))),
                                                     len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, (extra, content) in enumerate(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objs.append(b"<< /Length %d %s >>\nstream\n" % (len(content), extra) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_pdf_text_is_extracted(tmp_path):
    pytest.importorskip("pypdf")
    p = tmp_path / "doc.pdf"
    p.write_bytes(_minimal_pdf("Hello semantic search"))
    doc = one_doc(p)
    assert "Hello semantic search" in text_of(doc)
    assert doc.metadata == {"path": str(p), "type": "pdf", "pages": 1}


def test_pdf_with_a_broken_later_page_is_skipped_not_raised_while_read(tmp_path):
    pytest.importorskip("pypdf")
    p = tmp_path / "broken.pdf"
    p.write_bytes(_minimal_pdf("Hello semantic search", second_page=b"/Filter /NoSuchDecode"))
    assert load(p) == [Skipped(str(p), "unreadable: NotImplementedError: Unsupported filter /NoSuchDecode", transient=True)]


def test_binary_file_is_skipped(tmp_path):
    p = tmp_path / "blob.txt"
    p.write_bytes(b"looks like text\x00\x01\x02")
    assert load(p) == [Skipped(str(p), "binary file")]


def test_empty_and_whitespace_files_are_skipped(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_bytes(b"\xef\xbb\xbf \n\t\n")
    assert [s.reason for s in load(tmp_path)] == ["empty file", "empty file"]


def test_a_records_file_without_records_says_so(tmp_path):
    for name in ["empty.jsonl", "empty.json", "empty.csv", "list.json", "header.csv"]:
        (tmp_path / name).write_bytes(b" \n")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "header.csv").write_text("id,text\n")
    assert load(tmp_path) == [Skipped(str(tmp_path / n), "no records") for n in
                              ["empty.csv", "empty.json", "empty.jsonl", "header.csv", "list.json"]]


def test_a_records_file_emptied_since_it_was_indexed_loses_its_records(tmp_path, home):
    from semsearch.collection import Collection

    docs = tmp_path / "docs"
    docs.mkdir()
    files = {"c.jsonl": '{"text": "zebras graze"}\n', "d.json": '[{"text": "zebras graze"}]',
             "e.csv": "text\nzebras graze\n"}
    for name, text in files.items():
        (docs / name).write_text(text)
    (docs / "keep.txt").write_text("lions sleep")
    coll = Collection.create(tmp_path / "coll")
    assert coll.add_files([docs]).added == 4
    for name in files:
        (docs / name).write_text("\n")
    report = coll.add_files([docs])
    assert coll.count() == 1 and coll.search("zebras", mode="lexical") == []
    assert [reason for _, reason in report.skipped] == ["no records"] * 3
    coll.close()


def test_a_file_emptied_or_turned_binary_loses_its_text_one_unreadable_keeps_it(tmp_path, home):
    """Re-indexing kept what was indexed from any skipped file: an emptied (or binary) file
    stayed searchable forever. Only a file that may read fine next time (an I/O error, JSON
    caught half-written) keeps its documents."""
    from semsearch.collection import Collection

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {"a.txt": "zebras graze", "b.md": "zebras run", "c.json": '[{"text": "zebras sleep"}]',
                       "d.txt": "lions sleep"}.items():
        (docs / name).write_text(text)
    with Collection.create(tmp_path / "coll") as coll:
        assert coll.add_files([docs]).added == 4
        (docs / "a.txt").write_text("")
        (docs / "b.md").write_bytes(b"\0\1\2 zebras")
        (docs / "c.json").write_text('[{"text": "zebras sl')  # caught half-written
        report = coll.add_files([docs])
        assert sorted(r for _, r in report.skipped)[:2] == ["binary file", "empty file"]
        assert report.removed == 2
        assert {h.text for h in coll.search("zebras", mode="lexical")} == {"zebras sleep"}


def test_unsupported_type_is_skipped(tmp_path):
    p = tmp_path / "tool.exe"
    p.write_bytes(b"MZ")
    assert load(tmp_path) == [Skipped(str(p), "unsupported type .exe")]  # found by a walk without --glob
    assert [d.metadata["type"] for d in load(p)] == ["exe"]  # named: read as text (binary ones are skipped)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unreadable_file_is_skipped(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text("hidden")
    p.chmod(0)
    if os.geteuid():
        assert load(p) == [Skipped(str(p), "permission denied")]
        return
    # root (as under CI) reads anything; without the capabilities that let it, it is refused
    # as anyone would be, so the load runs in a process that lacks them
    code = ("from semsearch.loaders import iter_documents\n"
            f"print([(d.source, d.reason) for d in iter_documents([{str(p)!r}])])")
    out = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr([(str(p), "permission denied")])


def test_folders_walk_sorted_recursively_skipping_hidden(tmp_path):
    for rel in ["b.txt", "a/z.md", "a/c.txt", ".git/config.txt", "a/.hidden.txt"]:
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"text of {rel}")
    keys = [d.key for d in load(tmp_path)]
    assert keys == [str(tmp_path / r) for r in ["a/c.txt", "a/z.md", "b.txt"]]


def test_glob_filters_files_in_folders(tmp_path):
    for rel in ["top.md", "top.txt", "sub/deep.txt", "sub/deep.md"]:
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("words")
    assert [Path(d.key).name for d in load(tmp_path, glob="*.md")] == ["deep.md", "top.md"]
    assert [Path(d.key).name for d in load(tmp_path, glob="**/*.txt")] == ["deep.txt", "top.txt"]
    assert [Path(d.key).name for d in load(tmp_path, glob="sub/*")] == ["deep.md", "deep.txt"]


def test_same_file_given_twice_is_loaded_once(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("once")
    assert len(load(tmp_path, p)) == 1


def test_missing_path_raises_before_anything_is_yielded(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    with pytest.raises(NotFound, match="nope"):
        iter_documents([tmp_path, tmp_path / "nope"])


def test_large_text_file_streams_in_segments(tmp_path):
    p = tmp_path / "big.txt"
    line = "naïve words stream through the loader in pieces\n"
    with open(p, "w", encoding="utf-8") as f:
        for _ in range(30):  # ~30 MB
            f.write(line * (1_000_000 // len(line)))
    doc = one_doc(p)
    n = size = 0
    h = hashlib.sha256()
    for seg in doc.segments():
        n += 1
        assert len(seg) <= 1_100_000 and seg[-1].isspace()  # ~1 MB, cut after whitespace
        size += len(seg)
        h.update(seg.encode())
    assert n >= 25
    assert h.hexdigest() == doc.content_hash  # nothing lost, nothing duplicated
    assert doc.replaced_chars == 0


def test_small_file_without_trailing_whitespace_is_one_segment(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("alpha beta gamma.")
    assert list(one_doc(path).segments()) == ["alpha beta gamma."]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_names_that_are_not_utf8_are_skipped_with_a_printable_path(tmp_path):
    root = os.fsencode(tmp_path)
    for name in [b"bad\xffname.txt", b"dir\xfe/inside.txt", b"fine.txt"]:
        os.makedirs(os.path.dirname(root + b"/" + name), exist_ok=True)
        with open(root + b"/" + name, "w") as f:
            f.write("some words")
    docs = load(tmp_path)
    assert docs[:2] == [Skipped(f"{tmp_path}/bad\\xffname.txt", "name is not valid UTF-8 (rename it to index it)"),
                        Skipped(f"{tmp_path}/dir\\xfe", "name is not valid UTF-8 (rename it to index it)")]
    assert [d.key for d in docs[2:]] == [str(tmp_path / "fine.txt")]
    with pytest.raises(InvalidInput, match=r"bad\\xffname.txt: name is not valid UTF-8"):
        load(os.fsdecode(root + b"/bad\xffname.txt"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_index_of_a_folder_with_a_name_that_is_not_utf8_indexes_the_rest(tmp_path, home):
    from click.testing import CliRunner
    from semsearch.cli import cli

    with open(os.fsencode(tmp_path) + b"/caf\xe9.txt", "w") as f:
        f.write("latin-1 file name")
    (tmp_path / "ok.txt").write_text("a file about cats")
    result = CliRunner().invoke(cli, ["index", str(tmp_path), "--name", "odd"])
    assert result.exit_code == 0, result.output
    assert "added 1" in result.output and "skipped 1: name is not valid UTF-8" in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_a_folder_is_reported_not_silently_passed_over(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "a.txt").write_text("words")
    os.symlink(tmp_path / "gone.txt", tmp_path / "dangling.txt")  # a vanished file: nothing to say
    assert [d.key if isinstance(d, Document) else d for d in load(tmp_path)] == [
        str(tmp_path / "a.txt"), Skipped(str(tmp_path / "pipe.txt"), "not a regular file")]
    assert load(tmp_path, glob="*.md") == []
