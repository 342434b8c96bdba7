"""`semsearch get` and `semsearch documents`: stored documents read back through Click's
CliRunner, on a small collection indexed for real (files and JSONL records) plus a text."""
import json
import subprocess
import sys
from datetime import datetime

import pytest

from test_cli import assert_one_line_error, ok, run

LONG = "The committee met on a rainy Tuesday to review the budget, the staffing plan and the roadmap. " * 4
RECORDS = [
    {"id": "r1", "text": "Cats purr and chase mice.", "lang": "en", "year": 2020},
    {"id": "r2", "text": "Rockets launch satellites into orbit.", "lang": "en", "year": 2021},
    {"id": "r3", "text": "Les chats \x1b[31mronronnent.", "lang": "fr", "year": 2021, "mood": "\x9b31m"},
]


@pytest.fixture(scope="module")
def notes(tmp_path_factory, model_folder):
    """(home, {id: text}, docs folder): a collection 'notes' of a multi-chunk .md file, three
    records of a .jsonl (PATH#ID ids) and one text added with --id, read only by the tests."""
    root = tmp_path_factory.mktemp("documents")
    docs = root / "docs"
    docs.mkdir()
    (docs / "minutes.md").write_text(LONG)
    (docs / "recs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    home = root / "indexes"
    ok(run("--home", home, "index", docs, "--name", "notes", "--chunk-tokens", 32, "--overlap", 8))
    ok(run("--home", home, "add", "notes", "--text", "a plain   note", "--id", "note-1", "--meta", "k=v"))
    texts = {str(docs / "minutes.md"): LONG.rstrip(), "note-1": "a plain   note",
             **{f"{docs / 'recs.jsonl'}#{r['id']}": r["text"] for r in RECORDS}}
    return home, texts, docs


def cli(notes, *args):
    return run("--home", notes[0], *args)


def json_lines(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def headers(result):
    """The header lines of the human format (a text's lines are indented or empty)."""
    return [line for line in result.stdout.splitlines() if line and not line.startswith("    ")]


def test_get_prints_a_header_and_the_text_of_each_document_in_the_order_given(notes):
    home, texts, docs = notes
    minutes, r2 = str(docs / "minutes.md"), f"{docs / 'recs.jsonl'}#r2"
    lines = ok(cli(notes, "get", "notes", "note-1", r2, minutes)).stdout.splitlines()
    assert len(lines) == 6
    fields = [lines[i].split("  ") for i in (0, 2, 4)]  # id, source, chunks, added, metadata
    assert [f[:3] for f in fields[:2]] == [["note-1", "(text)", "1 chunk"], [r2, str(docs / "recs.jsonl"), "1 chunk"]]
    assert fields[2][:2] == [minutes, minutes] and int(fields[2][2].removesuffix(" chunks")) > 1
    assert [f[4] for f in fields] == ['{"k": "v"}', '{"id": "r2", "lang": "en", "year": 2021}',
                                      json.dumps({"path": minutes, "type": "md"})]
    assert [lines[i] for i in (1, 3, 5)] == ["    a plain   note", "    Rockets launch satellites into orbit.",
                                            f"    {texts[minutes]}"]


def test_get_shows_when_a_document_was_added_in_local_time(notes):
    human = ok(cli(notes, "get", "notes", "note-1")).stdout.splitlines()[0]
    stored = json_lines(ok(cli(notes, "get", "notes", "note-1", "--json")))[0]["added_at"]
    added = datetime.fromisoformat(human.split("  ")[3].removeprefix("added "))
    assert added.utcoffset() == datetime.fromtimestamp(stored).astimezone().utcoffset()
    assert added.timestamp() == int(stored)


def test_get_json_is_one_object_a_line_with_the_stored_fields(notes):
    home, texts, docs = notes
    minutes, r1 = str(docs / "minutes.md"), f"{docs / 'recs.jsonl'}#r1"
    rows = json_lines(ok(cli(notes, "get", "notes", r1, minutes, r1, "--json")))
    assert [row["id"] for row in rows] == [r1, minutes]  # one id given twice: printed once
    for row in rows:
        assert set(row) == {"id", "text", "source", "metadata", "chunks", "added_at"}
        assert row["text"] == texts[row["id"]] and isinstance(row["added_at"], float)
    assert (rows[0]["source"], rows[0]["metadata"], rows[0]["chunks"]) == (
        str(docs / "recs.jsonl"), {"id": "r1", "lang": "en", "year": 2020}, 1)
    assert rows[1]["chunks"] > 1  # the text is rebuilt whole from several chunks
    assert json_lines(ok(cli(notes, "get", "notes", "note-1", "--json")))[0]["source"] is None


def test_get_escapes_control_characters_on_the_terminal_but_not_in_json(notes):
    home, texts, docs = notes
    r3 = f"{docs / 'recs.jsonl'}#r3"
    human = ok(cli(notes, "get", "notes", r3)).stdout
    assert "\x1b" not in human and "    Les chats \\x1b[31mronronnent." in human.splitlines()
    assert "\x9b" not in human and '"mood": "\\x9b31m"' in human  # a C1 escape JSON leaves as it is
    assert json_lines(ok(cli(notes, "get", "notes", r3, "--json")))[0]["text"] == texts[r3]


def test_get_of_a_missing_id_prints_those_found_then_one_error_line(notes):
    result = cli(notes, "get", "notes", "nope", "note-1")
    assert_one_line_error(result, code=3, match="collection notes has no document 'nope'")
    assert headers(result)[0].startswith("note-1  (text)") and len(headers(result)) == 1


def test_get_of_many_missing_ids_names_a_few_and_counts_the_rest(notes):
    result = cli(notes, "get", "notes", "a", "b", "note-1", "c", "d", "e", "--json")
    line = assert_one_line_error(result, code=3)
    assert line == "error: collection notes has no documents 'a', 'b', 'c' and 2 more"
    assert [row["id"] for row in json_lines(result)] == ["note-1"]


@pytest.mark.parametrize("args, match", [
    (["get", "notes", "note-1", " "], "ID 2 must be 1 to"),
    (["documents", "notes", "--limit", "0"], "limit must be at least 1"),
    (["documents", "notes", "--after", ""], "after must be 1 to"),
    (["documents", "notes", "--where", "no-equals-sign"], "--where expects KEY=VALUE"),
    (["documents", "notes", "--where", "colour=red"], "unknown metadata key 'colour'"),
])
def test_bad_input_is_one_line_exit_2_and_prints_nothing(notes, args, match):
    result = cli(notes, *args)
    assert_one_line_error(result, code=2, match=match)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["get", "nowhere", "x"], ["documents", "nowhere"]])
def test_a_collection_that_does_not_exist_is_one_line_exit_3(notes, args):
    assert_one_line_error(cli(notes, *args), code=3, match="no collection 'nowhere'")


def test_documents_lists_every_document_in_id_order_one_line_each(notes):
    home, texts, docs = notes
    lines = ok(cli(notes, "documents", "notes")).stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == sorted(texts)
    assert lines[-1].startswith("note-1  (text)  1 chunk  added ") and lines[-1].endswith('  {"k": "v"}')
    rows = json_lines(ok(cli(notes, "documents", "notes", "--json")))
    assert [row["id"] for row in rows] == sorted(texts)
    assert all(row["text"] is None for row in rows)  # text only with --text


def test_documents_text_prints_each_text_as_get_does(notes):
    home, texts, docs = notes
    ids = sorted(texts)
    assert ok(cli(notes, "documents", "notes", "--text")).stdout == ok(cli(notes, "get", "notes", *ids)).stdout
    rows = json_lines(ok(cli(notes, "documents", "notes", "--text", "--json")))
    assert {row["id"]: row["text"] for row in rows} == texts


def test_documents_where_matches_as_search_where_does(notes):
    home, texts, docs = notes
    records = f"{docs / 'recs.jsonl'}#"

    def listed(*where):
        return [row["id"] for row in json_lines(ok(cli(notes, "documents", "notes", "--json", *where)))]
    assert listed("--where", "year=2021") == [records + "r2", records + "r3"]
    assert listed("--where", "year=2021", "--where", "lang=en") == [records + "r2"]
    assert listed("--where", f"source={docs / 'minutes.md'}") == [str(docs / "minutes.md")]
    assert listed("--where", "id=note-1") == ["note-1"]


def test_documents_pages_with_limit_and_after_join_up_to_the_whole_list(notes):
    home, texts, docs = notes
    pages, after = [], []
    while True:
        page = [row["id"] for row in json_lines(ok(cli(notes, "documents", "notes", "--json", "--limit", 2, *after)))]
        if not page:
            break
        assert len(page) <= 2
        pages.append(page)
        after = ["--after", page[-1]]
    assert sum(pages, []) == sorted(texts) and len(pages) == 3


def test_documents_matching_nothing_says_no_documents_or_prints_no_json(notes):
    assert ok(cli(notes, "documents", "notes", "--after", "zzz")).stdout == "no documents\n"
    assert ok(cli(notes, "documents", "notes", "--where", "lang=de", "--json")).stdout == ""


def test_help_says_what_is_printed_how_texts_come_back_and_what_ids_are():
    for command in ("get", "documents"):
        text = " ".join(run(command, "--help").output.split())
        assert "rebuilt from its stored chunks" in text and "PATH#ID" in text and "search --json" in text
    assert "--after the last id printed" in " ".join(run("documents", "--help").output.split())


def test_a_reader_that_stops_early_ends_documents_quietly(home, tmp_path):
    """`semsearch documents big | head -1`: exit 141, nothing on stderr (not 'error: Broken pipe')."""
    records = tmp_path / "big.jsonl"  # ~1 MB of listing from little text to embed
    records.write_text("".join(json.dumps({"id": f"d{i:04}", "text": f"note {i}", "pad": "x" * 2000}) + "\n"
                               for i in range(500)))
    ok(run("add", "big", "--jsonl", records))
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "documents", "big"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(6) == b"d0000 "
    proc.stdout.close()
    assert proc.wait(120) == 141
    assert proc.stderr.read() == b""


# -- similar ----------------------------------------------------------------------------------
def test_similar_prints_the_documents_most_like_one_it_left_out(notes):
    home, texts, docs = notes
    r1 = f"{docs / 'recs.jsonl'}#r1"
    hits = json.loads(ok(cli(notes, "similar", "notes", r1, "--json")).stdout)
    assert r1 not in [h["id"] for h in hits] and len(hits) == len(texts) - 1
    from semsearch.collection import Collection
    with Collection.open(home / "notes") as coll:
        assert [h["id"] for h in hits] == [h.id for h in coll.similar(r1)]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    human = ok(cli(notes, "similar", "notes", r1, "-k", 2)).stdout.splitlines()
    assert len(human) == 4 and human[0].startswith(" 1. ") and hits[0]["id"] in human[0]


def test_similar_takes_where_and_chunks(notes):
    home, texts, docs = notes
    minutes = str(docs / "minutes.md")
    hits = json.loads(ok(cli(notes, "similar", "notes", "note-1", "--where", "lang=en", "--json")).stdout)
    assert {h["metadata"]["lang"] for h in hits} == {"en"}
    chunks = json.loads(ok(cli(notes, "similar", "notes", f"{docs / 'recs.jsonl'}#r2", "--chunks", "-k", 50,
                               "--json")).stdout)
    assert [h["id"] for h in chunks].count(minutes) > 1  # several passages of one document


def test_similar_of_a_missing_id_or_a_bad_k_is_one_line(notes):
    assert_one_line_error(cli(notes, "similar", "notes", "nope"), 3, "has no document 'nope'")
    assert_one_line_error(cli(notes, "similar", "notes", "note-1", "-k", 0), 2, "k must be at least 1")


def test_add_says_how_many_documents_replaced_one_of_their_id(home):
    ok(run("add", "c", "--text", "one", "--id", "a"))
    said = ok(run("add", "c", "--text", "uno", "--id", "a", "--text", "two", "--id", "b")).stdout
    assert said.strip() == "c: added 2 document(s), 1 replacing the one of the same id; 2 in the collection"
    assert ok(run("add", "c", "--text", "three")).stdout.strip() == "c: added 1 document(s); 3 in the collection"


def test_embed_npy_to_stdout_says_stdout(model_folder):
    result = ok(run("embed", "hello", "--format", "npy", "--out", "-"))
    assert "embeddings to stdout" in result.stderr
