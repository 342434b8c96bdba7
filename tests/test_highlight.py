"""Hit.highlights: where a hit's text holds the query's words, as the lexical index reads
them (FTS5's own tokenizer and query), in every mode, through the library and the command
line (the server's are in test_server.py). Real model, real SQLite."""
import json
import os
import pty
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.errors import WrongType

DOCS = {
    "fix": "We fixed the login bug yesterday; more fixes ship today.",
    "cv": "Send your résumé to the office by Friday.",
    "ko": "임베딩은 문장을 벡터로 바꾼다. 검색에는 임베딩이 쓰인다.",
    "zh": "中文信息检索系统很快。",
    "quote": 'He said "stop" (twice), then left: a NEAR miss.',
}
MODES = ("dense", "lexical", "hybrid")


def words(hit) -> list[str]:
    return [hit.text[start:end] for start, end in hit.highlights]


def spans_of(text: str, *found: str) -> list[list[int]]:
    """Where each of ``found`` is in ``text`` (each once, in order)."""
    out, at = [], 0
    for word in found:
        at = text.index(word, at)
        out.append([at, at + len(word)])
        at += len(word)
    return out


@pytest.fixture(scope="module")
def coll(collection_of):
    return collection_of(DOCS)


def hit_for(coll, query: str, doc: str, mode: str, **options):
    """The hit of document ``doc`` (every document is ranked: k is their number)."""
    hits = coll.search(query, k=len(DOCS), mode=mode, **options)
    return next(h for h in hits if h.id == doc)


@pytest.mark.parametrize("mode", MODES)
def test_a_stemmed_word_is_marked_in_every_mode(coll, mode):
    hit = hit_for(coll, "how to fix a login bug", "fix", mode)
    assert hit.highlights == spans_of(DOCS["fix"], "fixed", "login", "bug", "fixes")
    assert hit.to_dict()["highlights"] == hit.highlights


@pytest.mark.parametrize("mode", ["dense", "hybrid"])  # lexical finds only documents with a word
def test_a_hit_without_the_querys_words_has_no_highlights(coll, mode):
    hits = coll.search("how to fix a login bug", k=len(DOCS), mode=mode)
    assert len(hits) == len(DOCS) and {h.id for h in hits if not h.highlights} == set(DOCS) - {"fix"}


@pytest.mark.parametrize("query", ["resume", "résumé", "RESUMES"])
def test_diacritics_are_folded_and_the_text_is_marked_as_written(coll, query):
    hit = hit_for(coll, query, "cv", "lexical")
    assert hit.highlights == spans_of(DOCS["cv"], "résumé") and words(hit) == ["résumé"]


def test_a_korean_word_is_marked_inside_the_word_its_particle_is_attached_to(coll):
    hit = hit_for(coll, "임베딩", "ko", "lexical")
    assert hit.highlights == spans_of(DOCS["ko"], "임베딩", "임베딩") and words(hit) == ["임베딩", "임베딩"]


def test_a_chinese_word_is_marked_inside_a_sentence_without_spaces(coll):
    hit = hit_for(coll, "信息检索", "zh", "hybrid")
    assert hit.highlights == spans_of(DOCS["zh"], "信息检索")
    # two words side by side: one span
    assert hit_for(coll, "检索 系统", "zh", "lexical").highlights == spans_of(DOCS["zh"], "检索系统")


def test_fts_syntax_in_the_query_is_words_not_operators(coll):
    for mode in MODES:
        hit = hit_for(coll, '"stop" AND (twice) NEAR* OR -', "quote", mode)
        assert words(hit) == ["stop", "twice", "NEAR"], mode  # "and", "or": stopwords, left out as lexical search does
    for query in ('"', "***", "()", "?!"):  # no word at all: nothing to mark, no error
        assert all(not h.highlights for h in coll.search(query, k=len(DOCS), mode="hybrid"))


def test_several_queries_each_mark_their_own_words(coll):
    first, second = coll.search(["login", "friday"], k=1, mode="lexical")
    assert words(first[0]) == ["login"] and words(second[0]) == ["Friday"]


@pytest.mark.parametrize("mode", MODES)
def test_highlights_leave_ranking_and_where_filters_as_they_were(coll, mode):
    where = {"id": {"$in": ["fix", "quote", "cv"]}}
    marked = coll.search("fix the bug she said", k=5, mode=mode, where=where)
    plain = coll.search("fix the bug she said", k=5, mode=mode, where=where, highlight=False)
    assert [(h.id, h.score, h.chunk_id) for h in marked] == [(h.id, h.score, h.chunk_id) for h in plain]
    assert {h.id for h in marked} <= {"fix", "quote", "cv"} and all(h.highlights == [] for h in plain)
    assert next(h for h in marked if h.id == "fix").highlights == spans_of(DOCS["fix"], "fixed", "bug", "fixes")


def test_highlight_must_be_a_flag(coll):
    with pytest.raises(WrongType, match="highlight must be True or False"):
        coll.search("bug", highlight="no")


def test_similar_has_no_query_and_no_highlights(coll):
    assert coll.similar("fix", k=4) and all(h.highlights == [] for h in coll.similar("fix", k=4))


def test_a_word_in_two_overlapping_chunks_is_marked_in_each(collection_of):
    filler = " ".join(f"word{i}" for i in range(40))
    text = f"{filler} the lighthouse keeper polished the lamp {filler}"
    coll = collection_of({"long": text}, chunk_tokens=32, overlap=16)
    for mode in ("dense", "hybrid"):
        hits = coll.search("lighthouse", k=10, mode=mode)
        holding = [h for h in hits if "lighthouse" in h.text]
        assert len(holding) >= 2, [h.text for h in hits]  # the word lies in the overlap
        for h in hits:
            assert h.highlights == [[m.start(), m.end()] for m in re.finditer("lighthouse", h.text)]
            assert text[h.start:h.end] == h.text


def test_many_hits_mixed_scripts_are_all_marked(collection_of):
    """Past MATCH_SEEKS hits the chunks are matched in one pass, not one by one; texts with
    CJK go through the temp table in the same call: every hit gets its words either way."""
    from semsearch.store import MATCH_SEEKS

    docs = {f"d{i}": f"Note {i}: the pump was fixed on day {i}." for i in range(MATCH_SEEKS + 6)}
    docs |= {f"zh{i}": f"水泵 pump 已修好 {i}" for i in range(3)}
    coll = collection_of(docs)
    for k in (5, len(docs)):
        hits = coll.search("fixing pumps", k=k, mode="dense")
        assert len(hits) == k
        for h in hits:
            assert h.highlights == spans_of(h.text, "pump", "fixed") if h.id.startswith("d") else \
                spans_of(h.text, "pump"), h.id


def test_cjk_positions_map_back_to_the_stored_text():
    from semsearch.lang import fts_text
    from semsearch.lang import fts_positions

    for text in ["", "plain", "中", "임베딩은 ok 中文 x", "a中b", "中文信息检索系统很快。"]:
        fts, where = fts_positions(text)
        assert fts == fts_text(text) and len(where) == len(fts)
        assert all(text[a:b] == fts[i] for i, (a, b) in enumerate(where) if b > a)


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture
def notes(home):
    from semsearch.collection import Collection

    with Collection.create("notes") as coll:
        coll.add_texts(list(DOCS.values()), ids=list(DOCS))
    return home


def test_search_json_has_the_highlights(notes):
    result = CliRunner().invoke(cli, ["search", "notes", "fixing bugs", "--mode", "lexical", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert hits[0]["id"] == "fix" and hits[0]["highlights"] == spans_of(DOCS["fix"], "fixed", "bug", "fixes")


def test_search_queries_lines_have_the_highlights(notes, tmp_path):
    (tmp_path / "q.txt").write_text("résumé\n임베딩\n")
    result = CliRunner().invoke(cli, ["search", "notes", "--queries", str(tmp_path / "q.txt"), "-k", "1",
                                      "--mode", "lexical"])
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert first["hits"][0]["highlights"] == spans_of(DOCS["cv"], "résumé")
    assert second["hits"][0]["highlights"] == spans_of(DOCS["ko"], "임베딩", "임베딩")


def run_in_terminal(args: list[str], env: dict | None = None) -> str:
    """`python -m semsearch ARGS` with its stdout on a pseudo-terminal: what it printed."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", *args], stdout=secondary, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed (Linux: EIO)
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    assert proc.wait(120) == 0, proc.stderr.read()
    return out.decode()


BOLD, NORMAL = "\x1b[1m", "\x1b[22m"


def test_search_in_a_terminal_shows_the_words_in_bold(notes):
    out = run_in_terminal(["search", "notes", "fixing the login bug", "--mode", "lexical", "-k", "1"])
    assert (f"We {BOLD}fixed{NORMAL} the {BOLD}login{NORMAL} {BOLD}bug{NORMAL} yesterday; more "
            f"{BOLD}fixes{NORMAL} ship today.") in out


def test_a_terminal_line_starts_shortly_before_a_match_deep_in_the_passage():
    from semsearch.cli import preview

    text = "lorem ipsum " * 40 + "the pump failed" + " dolor" * 10  # the match at character 484
    start = text.index("pump")
    line = preview(text, [[start, start + 4]], width=80)
    assert line.startswith("…") and f"{BOLD}pump{NORMAL} failed" in line and len(line) < 100
    assert line[1:].startswith("ipsum ") or line[1:].startswith("lorem ")  # at a word
    assert preview(text, [], width=80).startswith("lorem ipsum")  # no match shown: the passage's start
    assert preview("a short pump note", [[8, 12]]) == f"a short {BOLD}pump{NORMAL} note"  # near the start: as before


def test_no_bold_with_no_color_or_through_a_pipe_or_for_similar(notes):
    args = ["search", "notes", "fixing the login bug", "--mode", "lexical", "-k", "1"]
    assert "\x1b" not in run_in_terminal(args, {"NO_COLOR": "1"})
    piped = subprocess.run([sys.executable, "-m", "semsearch", *args], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout and f"    {DOCS['fix']}\n" in piped.stdout  # plain, as before
    assert "\x1b" not in run_in_terminal(["similar", "notes", "fix", "-k", "2"])
