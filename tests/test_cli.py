"""The `semsearch` command through Click's CliRunner, with the real model and real files."""
import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import STORE_FILE

DOCS = {
    "cats.txt": "Cats are small furry pets that purr, chase mice and sleep most of the day. " * 3,
    "rockets.md": "# Launch\n\nThe rocket launch carried a satellite into orbit around the Earth.\n",
    "bread.txt": "Knead the dough, let it rise overnight, then bake the loaf in a hot oven.\n",
}


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_one_line_error(result, code=1, match=None):
    """One `error:` line and the exit code errors.py gives the failure (1 general,
    2 invalid input, 3 not found, 75 busy)."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    if match:
        assert match in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def indexed(home, docs):
    ok(run("index", docs, "--name", "notes", "--chunk-tokens", 32, "--overlap", 8))
    return home / "notes"


def test_index_then_search_json_lists_hits_with_fields(indexed, docs):
    result = ok(run("search", "notes", "a spacecraft going to orbit", "--json", "-k", 3))
    hits = json.loads(result.stdout)
    assert isinstance(hits, list) and 1 <= len(hits) <= 3
    for hit in hits:
        assert {"id", "score", "source", "text", "metadata"} <= set(hit)
        assert isinstance(hit["score"], float) and isinstance(hit["metadata"], dict)
    assert hits[0]["source"] == str(docs / "rockets.md")
    assert "satellite" in hits[0]["text"]


def test_index_prints_a_report(home, docs):
    result = ok(run("index", docs, "--name", "notes"))
    assert "added 3" in result.stdout and "(3 documents in the collection)" in result.stdout
    result = ok(run("index", docs, "--name", "notes"))
    assert "added 0" in result.stdout and "unchanged 3" in result.stdout


def test_index_names_the_first_skipped_files_and_counts_the_rest(home, docs):
    """Skips were reported by reason only: which files they were could not be seen."""
    for i in range(6):
        (docs / f"blob{i}.txt").write_bytes(b"\0\1\2")
    (docs / "blank.md").write_text(" \n")
    lines = ok(run("index", docs, "--name", "notes")).stdout.splitlines()
    assert "added 3, updated 0, unchanged 0, removed 0, skipped 7;" in lines[0]
    assert lines[1:] == ["  skipped 6: binary file", "  skipped 1: empty file", f"    {docs / 'blank.md'}: empty file",
                         *(f"    {docs / f'blob{i}.txt'}: binary file" for i in range(4)), "    and 2 more"]


def test_info_json_has_document_and_chunk_counts(indexed):
    data = json.loads(ok(run("info", "notes", "--json")).stdout)
    assert data["documents"] == 3
    assert data["chunks"] >= 4  # cats.txt is several 32-token chunks
    assert data["chunk_tokens"] == 32 and data["overlap"] == 8


def test_list_names_the_collections(home):
    assert "no collections" in ok(run("list")).stdout
    ok(run("add", "one", "--text", "first"))
    ok(run("add", "two", "--text", "second"))
    assert ok(run("list")).stdout.split() == ["one", "two"]
    assert json.loads(ok(run("list", "--json")).stdout) == ["one", "two"]


def test_rm_yes_removes_the_collection(indexed):
    ok(run("rm", "notes", "--yes"))
    assert not indexed.exists()
    assert ok(run("list")).stdout.split()[:2] == ["no", "collections"]


def test_rm_answered_no_keeps_the_collection(indexed):
    before = snapshot(indexed)
    result = run("rm", "notes", input="n\n")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert (indexed / STORE_FILE).is_file() and snapshot(indexed) == before


def test_unknown_collection_is_a_one_line_error(home):
    line = assert_one_line_error(run("search", "nope", "anything"), code=3)
    assert "nope" in line
    assert_one_line_error(run("info", "nope"), code=3)
    assert_one_line_error(run("rm", "nope", "--yes"), code=3)


def test_bad_where_format_is_a_usage_error(indexed):
    result = run("search", "notes", "cats", "--where", "no-equals-sign")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "key=value" in result.stderr.lower()


@pytest.mark.parametrize("command", [("search", "notes", "cats", "--where"), ("add", "notes", "--text", "x", "--meta")])
def test_a_key_given_twice_is_an_error_not_the_last_one_winning(indexed, command):
    *args, option = command
    result = run(*args, option, "team=a", option, "team=b")
    assert_one_line_error(result, 2, "gives 'team' ")
    assert "twice" in result.stderr


def test_search_k_zero_is_an_error(indexed):
    before = snapshot(indexed)
    assert_one_line_error(run("search", "notes", "cats", "-k", 0), code=2)
    assert snapshot(indexed) == before


def test_embed_texts_prints_jsonl(model_folder):
    result = ok(run("embed", "hello", "world"))
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == ["hello", "world"]
    for r in rows:
        assert len(r["embedding"]) == 384
        assert abs(np.linalg.norm(r["embedding"]) - 1) < 1e-3


def test_a_reader_that_stops_early_ends_the_command_quietly(model_folder):
    """`semsearch embed ... | head`: exit 141 (as a shell reports SIGPIPE), not 'error: Broken pipe'."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "semsearch", "embed", *map(str, range(300))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100).startswith(b"{")
    proc.stdout.close()  # the reader goes away; ~1 MB of vectors is still to come
    assert proc.wait(120) == 141
    assert proc.stderr.read() == b""


def test_embed_reads_a_file_and_stdin_by_the_encoding_rule_index_uses(model_folder, tmp_path):
    """They were decoded as UTF-8 with errors replaced, unreported: a Windows-1252 file
    embedded 'caf\ufffd' where `index` reads 'café'."""
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes("café au lait\nnaïve\n".encode("cp1252"))
    texts = [json.loads(line)["text"] for line in ok(run("embed", "--file", legacy)).stdout.splitlines()]
    assert texts == ["café au lait", "naïve"]
    result = ok(run("embed", input=b"ok \xc3\xa9 bad \xff\n"))
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["ok é bad \ufffd"]
    assert "1 undecodable byte(s) in stdin replaced" in result.stderr


def test_index_without_a_terminal_logs_plain_progress_lines(home, tmp_path, monkeypatch):
    """tqdm draws nothing where stderr is not a terminal, so an `index` under a scheduler
    or nohup was silent for hours; it now logs a line every PLAIN_EVERY seconds."""
    import semsearch.progress

    monkeypatch.setattr(semsearch.progress, "PLAIN_EVERY", 0.0)  # a line after every file
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"note {i} on sailing")
    lines = [line for line in ok(run("index", docs, "--name", "logged")).stderr.splitlines()
             if line.startswith("progress: ")]
    assert [line.split(",")[0] for line in lines] == [f"progress: {i}/3 files ({100 * i / 3:.0f}%)" for i in (1, 2, 3)]


def test_plain_progress_lines_come_while_one_big_file_is_indexed(home, tmp_path, monkeypatch):
    """A line came only when a file was read, and reading runs ahead of embedding: `make
    demo`'s two JSONL files indexed for 337 s under nohup without one. Now a line is due every
    PLAIN_EVERY seconds until the last document is written, with the documents written so far."""
    import re

    import semsearch.progress

    monkeypatch.setattr(semsearch.progress, "PLAIN_EVERY", 0.01)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"id": i, "text": f"note {i} on sailing and knots"}) + "\n"
                           for i in range(1500)))  # two batches of embedding (ingest.FLUSH_CHUNKS)
    lines = [line for line in ok(run("index", big, "--name", "onefile")).stderr.splitlines()
             if line.startswith("progress: ")]
    written = {int(re.search(r", (\d+) docs written,", line)[1]) for line in lines}
    assert 0 < min(written - {0}, default=0) < 1500, lines  # a line while the second batch embedded


def test_embed_npy_writes_an_array(model_folder, tmp_path):
    out = tmp_path / "f.npy"
    ok(run("embed", "hello", "world", "third text", "--format", "npy", "--out", out))
    array = np.load(out)
    assert array.shape == (3, 384) and array.dtype == np.float32


def test_embed_with_missing_model_is_a_one_line_error(model_folder, tmp_path):
    result = run("embed", "hello", "--model", tmp_path / "nonexistent" / "dir",
                 env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert_one_line_error(result, code=3)


def test_embed_with_a_hub_id_it_cannot_fetch_is_a_one_line_not_found(model_folder, home):
    """huggingface_hub's LocalEntryNotFoundError came out as 'unexpected ...', exit 1."""
    result = run("embed", "hello", "--model", "no-such-org/no-such-model",
                 env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert "Hugging Face hub" in assert_one_line_error(result, code=3)


def test_embed_with_corrupt_model_says_reexport(model_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_folder, copy)
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    onnx.write_bytes(bytes(data))
    line = assert_one_line_error(run("embed", "hello", "--model", copy))
    assert "re-export" in line


def test_add_jsonl_imports_records_that_where_finds(home, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text(
        '{"id": "r1", "text": "Cats purr and chase mice.", "lang": "en", "year": 2020}\n'
        '{"id": "r2", "text": "Rockets launch satellites into orbit.", "lang": "en", "year": 2021}\n'
        '{"id": "r3", "text": "Les chats ronronnent.", "lang": "fr", "year": 2021}\n')
    result = ok(run("add", "recs", "--jsonl", records, "--meta", "batch=1"))
    assert "added 3" in result.stdout
    hits = json.loads(ok(run("search", "recs", "animals", "--where", "lang=fr", "--json")).stdout)
    assert [h["id"] for h in hits] == ["r3"]
    assert hits[0]["metadata"] == {"id": "r3", "lang": "fr", "year": 2021, "batch": "1"}
    hits = json.loads(ok(run("search", "recs", "space", "--where", "year=2021",
                             "--where", "lang=en", "--json")).stdout)
    assert [h["id"] for h in hits] == ["r2"]


def test_search_queries_file_prints_one_json_line_per_query(indexed, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text("baking bread\n\nspace launch\nkittens\n")
    result = ok(run("search", "notes", "--queries", queries, "-k", 2))
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    rows = [json.loads(line) for line in lines]
    assert [r["query"] for r in rows] == ["baking bread", "space launch", "kittens"]
    assert [r["hits"][0]["source"].rsplit("/", 1)[1] for r in rows] == ["bread.txt", "rockets.md", "cats.txt"]
    assert all(len(r["hits"]) <= 2 for r in rows)


def test_index_nonexistent_path_leaves_collection_untouched(indexed, tmp_path):
    before = snapshot(indexed)
    line = assert_one_line_error(run("index", tmp_path / "missing", "--name", "notes"), code=3)
    assert "missing" in line
    assert snapshot(indexed) == before


def test_index_nonexistent_path_creates_no_collection(home, tmp_path):
    assert_one_line_error(run("index", tmp_path / "missing", "--name", "fresh"), code=3)
    assert not (home / "fresh").exists()
    assert "no collections" in ok(run("list")).stdout


# ---------------------------------------------------------------- adversarial inputs (review)
def test_hybrid_weights_both_zero_is_a_one_line_invalid_input(indexed):
    assert_one_line_error(run("search", "notes", "cats", "--weights", "0,0"), code=2, match="weights")


def test_delete_blank_path_is_invalid_input_and_deletes_nothing(indexed, docs, monkeypatch):
    monkeypatch.chdir(docs)  # a blank path resolved is the current folder: every file in it
    before = snapshot(indexed)
    assert_one_line_error(run("delete", "notes", "--path", ""), code=2)
    assert snapshot(indexed) == before


def test_index_blank_path_is_invalid_input_and_creates_nothing(home, docs, monkeypatch):
    monkeypatch.chdir(docs)
    assert_one_line_error(run("index", "", "--name", "fresh"), code=2)
    assert not (home / "fresh").exists()


def test_search_with_both_query_and_queries_file_is_a_usage_error(indexed, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text("baking bread\n")
    assert_one_line_error(run("search", "notes", "kittens", "--queries", queries), code=2, match="not both")


def test_every_option_of_the_cli_commands_says_what_it_does():
    """`semsearch CMD --help` explains each option, serve's too (defined with the server)."""
    missing = [f"{name} {p.opts[0]}" for name, cmd in cli.commands.items()
               for p in cmd.params if p.param_type_name == "option" and not p.help and not p.hidden]
    assert not missing
    assert "SEMSEARCH_HOME" in run("serve", "--help").output  # not "the group's --home"
    assert "cosine" in run("search", "--help").output  # what --min-score compares against


def test_search_queries_file_longer_than_one_call_answers_every_line(indexed, tmp_path):
    from semsearch.validation import MAX_QUERIES
    queries = tmp_path / "q.txt"
    queries.write_text("".join(f"dough number {i}\n" for i in range(MAX_QUERIES + 2)))
    result = ok(run("search", "notes", "--queries", queries, "-k", 1, "--mode", "lexical"))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in rows] == [f"dough number {i}" for i in range(MAX_QUERIES + 2)]
    assert rows[-1]["hits"][0]["source"].endswith("bread.txt")


@pytest.mark.parametrize("option", [("--feedback", "1e308"), ("--weights", "1e308,1")])
def test_hybrid_weights_beyond_any_use_are_a_one_line_invalid_input(indexed, option):
    """They overflowed to inf/nan: garbage hits, with numpy's warnings on stderr."""
    assert_one_line_error(run("search", "notes", "cats", *option), code=2, match="at most")


# ---------------------------------------------------------------- Ray's own words (review)
def test_ray_auto_with_no_cluster_is_one_semsearch_line(indexed, docs, monkeypatch):
    """Ray's 'Could not find any running Ray instance ... `--address` flag or RAY_ADDRESS'
    named a flag semsearch does not have."""
    pytest.importorskip("ray")
    from ray._private.services import canonicalize_bootstrap_address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        canonicalize_bootstrap_address("auto")
        pytest.skip("a Ray cluster runs on this machine")
    except ConnectionError:
        pass
    for args in (["build", "notes", "--ray", "auto"], ["index", docs, "--name", "notes", "--ray", "auto"]):
        line = assert_one_line_error(run(*args), code=1, match="no Ray cluster found at auto")
        assert "--address" not in line and "--ray` with no address" in line


def test_a_local_ray_starts_without_ray_notices_whatever_ray_address_says(indexed, monkeypatch):
    """Every local start printed Ray's 'Token authentication is enabled for this Ray cluster'.
    And `build` without --ray (or `index --ray` alone) joined the cluster RAY_ADDRESS or the
    last `ray start` named, as plain ray.init() does: here nothing listens there, and it
    waited minutes on it."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{probe.getsockname()[1]}"
    built = subprocess.run([sys.executable, "-m", "semsearch", "build", "notes"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "RAY_ADDRESS": nobody})
    assert built.returncode == 0 and built.stdout.startswith("notes: "), built.stderr[-2000:]
    assert "Token authentication" not in built.stderr, built.stderr


def test_a_missing_input_file_is_not_found_whichever_command_reads_it(home, tmp_path):
    """A missing file was exit 1 for `embed --file x.txt` and `search --queries x.txt`
    (an OSError), 2 for `add --jsonl` and `eval` (click's check) and 3 for a .jsonl or an
    `index` path: now every one is NotFound, exit 3, one line naming it."""
    ok(run("add", "notes", "--text", "a note"))
    missing = tmp_path / "missing"
    for args in (("embed", "--file", f"{missing}.txt"), ("embed", "--file", f"{missing}.jsonl"),
                 ("search", "notes", "--queries", f"{missing}.txt"), ("add", "notes", "--jsonl", f"{missing}.jsonl"),
                 ("eval", missing), ("index", missing, "--name", "notes")):
        assert_one_line_error(run(*args), code=3, match=str(missing))


@pytest.mark.parametrize("answer", ["n\n", ""])
def test_rm_not_confirmed_says_so_in_an_error_line_and_leaves_stdout_empty(indexed, answer):
    """The question went to stdout and a refusal (or no answer: stdin at its end) ended in
    click's bare 'Aborted!'."""
    result = run("rm", "notes", input=answer)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "error: notes not removed: answer y, or give --yes"
    assert (indexed / STORE_FILE).is_file()


def test_rm_confirmed_on_stdin_removes_the_collection(indexed):
    result = ok(run("rm", "notes", input="y\n"))
    assert result.stdout.startswith("removed collection notes") and not indexed.exists()


def test_where_source_takes_a_relative_path_as_delete_path_does(indexed, docs, monkeypatch):
    """`--where source=docs/cats.txt` found nothing (sources are stored resolved), while
    `delete --path docs/cats.txt` deleted it."""
    monkeypatch.chdir(docs.parent)
    for given in ("docs/cats.txt", "./docs/../docs/cats.txt"):
        hits = json.loads(ok(run("search", "notes", "anything", "--where", f"source={given}", "--json")).stdout)
        assert hits and {h["source"] for h in hits} == {str(docs / "cats.txt")}, given


def test_embed_npy_writes_exactly_the_file_named(model_folder, tmp_path):
    """np.save(path) adds .npy to a name without it: --out vecs wrote vecs.npy (and said
    'to vecs'), --out /dev/stdout made a file /dev/stdout.npy."""
    out = tmp_path / "vecs"
    result = ok(run("embed", "hello", "world", "--format", "npy", "--out", out))
    assert not (tmp_path / "vecs.npy").exists() and np.load(out).shape == (2, 384)
    assert result.stderr == f"wrote 2x384 embeddings to {out}\n"
    piped = ok(run("embed", "hello", "--format", "npy", "--out", "-"))
    assert np.load(io.BytesIO(piped.stdout_bytes)).shape == (1, 384)


def test_embed_writes_a_file_of_many_windows_as_one_array(model_folder, embedder, tmp_path):
    """Vectors are written a window at a time (512, then 88 here) under one .npy header."""
    lines = [f"sentence {i} about {'rivers ' * (i % 5)}" for i in range(600)]
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "vectors.npy"
    ok(run("embed", "--file", source, "--format", "npy", "--out", out))
    array = np.load(out)
    assert array.shape == (600, 384) and np.max(np.abs(array - embedder.embed(lines))) <= 1e-5
    rows = ok(run("embed", "--file", source)).stdout.splitlines()
    assert [json.loads(r)["text"] for r in rows] == lines
    assert np.max(np.abs(np.array([json.loads(r)["embedding"] for r in rows]) - array)) <= 1e-6


def test_embed_out_dash_is_stdout_not_a_file_named_dash(model_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok(run("embed", "hello", "--out", "-"))
    assert json.loads(result.stdout)["text"] == "hello" and not (tmp_path / "-").exists()


def test_delete_where_deletes_the_documents_search_where_finds_and_says_how_many(home, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text(
        '{"id": "r1", "text": "Cats purr and chase mice.", "lang": "en", "year": 2020}\n'
        '{"id": "r2", "text": "Rockets launch satellites into orbit.", "lang": "en", "year": 2021}\n'
        '{"id": "r3", "text": "Les chats ronronnent.", "lang": "fr", "year": 2021}\n')
    ok(run("add", "recs", "--jsonl", records, "--meta", "batch=1"))
    result = ok(run("delete", "recs", "--where", "year=2021", "--where", "lang=en"))
    assert result.stdout.strip() == "recs: deleted 1 document(s); 2 left"
    hits = json.loads(ok(run("search", "recs", "anything", "--where", "year=2021", "--json")).stdout)
    assert [h["id"] for h in hits] == ["r3"]
    assert "deleted 2 document(s); 0 left" in ok(run("delete", "recs", "--where", "batch=1")).stdout
    assert "how many" in run("delete", "--help").output and "--where" in run("delete", "--help").output


def test_delete_where_takes_a_relative_source_as_delete_path_does(indexed, docs, monkeypatch):
    monkeypatch.chdir(docs.parent)
    assert "deleted 1 document(s); 2 left" in ok(run("delete", "notes", "--where", "source=docs/cats.txt")).stdout
    hits = json.loads(ok(run("search", "notes", "furry pets", "--json", "--mode", "dense")).stdout)
    assert {h["source"] for h in hits} == {str(docs / "rockets.md"), str(docs / "bread.txt")}


@pytest.mark.parametrize("args, code, match", [
    (["--where", "source=nowhere.txt"], 3, "no document matching source=nowhere.txt"),
    (["--where", "colour=red"], 2, "colour"),
    (["--where", "=red"], 2, "KEY=VALUE"),
    (["--where", "id=x", "--id", "x"], 2, "--where alone"),
    (["--where", "id=x", "--path", "."], 2, "--where alone"),
    ([], 2, "--where"),
])
def test_delete_where_that_matches_nothing_or_is_not_a_filter_is_one_line_and_deletes_nothing(
        indexed, args, code, match):
    before, docs = snapshot(indexed), json.loads(ok(run("info", "notes", "--json")).stdout)["documents"]
    assert_one_line_error(run("delete", "notes", *args), code=code, match=match)
    assert json.loads(ok(run("info", "notes", "--json")).stdout)["documents"] == docs == len(DOCS)
    if code == 2:  # refused before any write (one that matched nothing wrote a new generation)
        assert snapshot(indexed) == before


def fifo(tmp_path, name: str, data: bytes):
    """A named pipe that a thread writes ``data`` into once, as `<(cmd)` gives a command."""
    import os
    import threading

    path = tmp_path / name
    os.mkfifo(path)

    def feed():
        with open(path, "wb") as pipe:
            pipe.write(data)
    threading.Thread(target=feed, daemon=True).start()
    return path


def test_pipes_are_read_like_files(home, tmp_path):
    """`--jsonl <(cmd)`, `--file <(cmd)` and `--queries <(cmd)`: a pipe is read once, so its
    bytes are not read twice (once to find the encoding); it was 'no such file' (exit 3)."""
    records = b'{"id": "a", "text": "caf\xc3\xa9 au lait"}\n{"id": "b", "text": "rocket launch"}\n'
    assert "added 2 document(s)" in ok(run("add", "piped", "--jsonl", fifo(tmp_path, "records", records))).output
    hits = json.loads(ok(run("search", "piped", "caf\u00e9", "--json", "--mode", "lexical")).output)
    assert [h["id"] for h in hits] == ["a"] and hits[0]["text"] == "caf\u00e9 au lait"
    lines = ok(run("embed", "--file", fifo(tmp_path, "texts", b"one\ntwo\n"))).output.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["one", "two"]
    answers = ok(run("search", "piped", "--queries", fifo(tmp_path, "queries", b"rocket\n"))).output.splitlines()
    assert json.loads(answers[0])["hits"][0]["id"] == "b"
