"""`semsearch serve --watch` (semsearch/server/watching.py): one process that serves
collections and keeps those indexed from files in sync with them. A real server process on
a free loopback port, real files, the real model; every wait is bounded, nothing is timed."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from semsearch.collection import Collection, source_runs
from semsearch.errors import CollectionBusy

DEADLINE = 120  # seconds the server may take to start or stop
WAIT = 60  # seconds any one change may take to show over HTTP


@pytest.fixture
def env(tmp_path, model_folder):
    env = dict(os.environ, SEMSEARCH_HOME=str(tmp_path / "indexes"))  # SEMSEARCH_CACHE: conftest's model
    env.pop("SEMSEARCH_API_KEY", None)
    return env


def cli(env, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "semsearch", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return done


def wait_for(check, what: str):
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT} s"
        time.sleep(0.1)


class Server:
    """`semsearch serve --port 0 ARGS` with its stderr lines kept."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--port", "0", *map(str, args)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        watchdog = threading.Timer(DEADLINE, self.proc.kill)  # readline() must not wait for ever
        watchdog.start()
        try:
            first = self.proc.stderr.readline()
        finally:
            watchdog.cancel()
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", first)
        assert found, first + self.proc.stderr.read()
        self.url = f"http://127.0.0.1:{found[1]}"
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def get(self, path):
        return httpx.get(self.url + path, timeout=WAIT)

    def post(self, path, body):
        return httpx.post(self.url + path, json=body, timeout=WAIT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ids(server, name="notes") -> set:
    answer = server.get(f"/v1/collections/{name}/documents?limit=1000")
    assert answer.status_code == 200, answer.text
    return {d["id"] for d in answer.json()["data"]}


def test_serve_watch_follows_the_sources_while_it_answers_and_stops_on_sigterm(env, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    (notes / "b.txt").write_text("The rocket carried a satellite into orbit.")
    cli(env, "index", notes, "--name", "notes")
    cli(env, "add", "plain", "--text", "Volcanoes erupt lava and ash.", "--id", "volcano")  # no sources
    server = Server(env, "--watch", "--every", 0.5)
    try:
        # a new file is found by a search
        (notes / "c.txt").write_text("Knead the dough, let it rise, then bake the bread.")

        def found_bread():
            hits = server.post("/v1/collections/notes/search", {"query": "baking bread", "k": 1}).json()["data"]
            return hits and hits[0]["source"] == str(notes / "c.txt")
        wait_for(found_bread, "the new file in a search")

        # documents added over HTTP while passes write are kept
        for i in range(4):
            (notes / f"n{i}.txt").write_text(f"Note {i} is about ships, harbours and the sea.")
            added = server.post("/v1/collections/notes/documents",
                                {"documents": [{"id": f"by-hand-{i}", "text": f"A note {i} added by hand"}]})
            assert added.status_code == 200 and added.json()["added"] == 1, added.text
        files = {str(notes / f"n{i}.txt") for i in range(4)}
        wait_for(lambda: files <= ids(server), "the notes files indexed")

        # a deleted file's document goes
        (notes / "a.txt").unlink()
        wait_for(lambda: str(notes / "a.txt") not in ids(server), "the deleted file's document gone")
        hand = {f"by-hand-{i}" for i in range(4)}
        assert hand <= ids(server)  # not files under the sources: the watch leaves them

        info = server.get("/v1/collections/notes").json()
        assert info["watching"]["paths"] == [str(notes)] and info["watching"]["passes"] >= 3, info
        assert info["watching"]["last_pass"] <= time.time() and info["watching"]["error"] is None, info
        metrics = server.get("/metrics").text
        added = re.search(r'semsearch_watch_documents_total\{change="added",collection="notes"\} (\S+)', metrics)
        removed = re.search(r'semsearch_watch_documents_total\{change="removed",collection="notes"\} (\S+)', metrics)
        assert added and float(added[1]) == 5 and removed and float(removed[1]) == 1, metrics
        assert re.search(r'semsearch_watch_passes_total\{collection="notes"\} \d', metrics), metrics

        # the collection without sources is served as before, and not watched
        assert [h["id"] for h in server.post("/v1/collections/plain/search",
                                             {"query": "lava", "k": 3}).json()["data"]] == ["volcano"]
        assert "watching" not in server.get("/v1/collections/plain").json()
        assert ids(server, "plain") == {"volcano"}
        code = server.stop()
    finally:
        server.kill()
    err = "\n".join(server.lines)
    assert code in (0, -signal.SIGTERM) and "Traceback" not in err, err  # uvicorn re-raises SIGTERM once drained
    assert f"watching notes: {notes} every 0.5s" in server.lines, err
    assert any(line.startswith("not watching plain: it has no sources") for line in server.lines), err
    passes = [line for line in server.lines if re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d notes: added \d+, updated \d+, removed \d+, skipped \d+; "
        r"\d+ documents in the collection", line)]
    assert passes, err  # a line for each pass that changed something
    with Collection.open(tmp_path / "indexes" / "notes") as coll:  # everything committed, nothing locked
        held = {d.id for d in coll.documents()}
        assert held == {str(notes / n) for n in ("b.txt", "c.txt")} | files | hand
        assert coll.search("baking bread", k=1)[0].source == str(notes / "c.txt")


def test_a_collection_with_several_selections_gets_a_watch_for_each(env, tmp_path):
    """One watch a run of source_runs: each keeps its own glob, and removes only its own files."""
    notes, docs = tmp_path / "notes", tmp_path / "docs"
    notes.mkdir()
    docs.mkdir()
    (notes / "a.md").write_text("Cats purr and sleep most of the day.")
    (docs / "x.txt").write_text("Deploy the service behind a load balancer.")
    cli(env, "index", notes, "--name", "notes")
    cli(env, "index", docs, "--name", "notes", "--glob", "*.txt")
    server = Server(env, "--watch", "--every", 0.5)
    try:
        (docs / "y.md").write_text("Not a .txt file: left out.")
        (docs / "z.txt").write_text("Rotate the signing keys monthly.")
        (notes / "b.md").write_text("Tomatoes need sun and water.")
        wait_for(lambda: {str(docs / "z.txt"), str(notes / "b.md")} <= ids(server), "both runs' new files")
        assert str(docs / "y.md") not in ids(server)
        assert server.get("/v1/collections/notes").json()["watching"]["paths"] == [str(notes), str(docs)]
        code = server.stop()
    finally:
        server.kill()
    assert code in (0, -signal.SIGTERM), "\n".join(server.lines)


@pytest.mark.parametrize("args, says", [(["--every", "1"], "--every is the time between --watch's polls"),
                                        (["--watch", "--every", "0"], "every (seconds) must be at least"),
                                        (["--watch", "--every", "nan"], "every (seconds) must be a finite number")])
def test_bad_watch_options_are_one_line_errors(env, args, says):
    done = subprocess.run([sys.executable, "-m", "semsearch", "serve", "--port", "0", *args], env=env,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_two_collections_on_one_folder_in_one_process_exclude_each_others_writes(home, embedder, monkeypatch):
    """The server's Collection and the watch's are two objects on one folder in one process:
    their writer locks are separate, so only the lock file keeps their writes apart."""
    from semsearch import collection
    monkeypatch.setattr(collection, "LOCK_WAIT", 0.3)
    served = Collection.create("notes", embedder=embedder)
    watched = Collection.open("notes", embedder=embedder)
    try:
        entered, leave, outcome = threading.Event(), threading.Event(), []

        def hold():
            with watched.writer():
                entered.set()
                leave.wait(WAIT)

        holder = threading.Thread(target=hold)
        holder.start()
        assert entered.wait(WAIT)
        try:
            with pytest.raises(CollectionBusy, match="another process"):
                served.add_texts(["Cats purr."], ids=["cat"])
        finally:
            leave.set()
            holder.join(WAIT)

        def write():
            outcome.append(served.add_texts(["Cats purr."], ids=["cat"]))
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(WAIT)
        assert outcome == [["cat"]] and [h.id for h in watched.search("kittens", k=1)] == ["cat"]
    finally:
        served.close()
        watched.close()


def test_a_pass_that_crashes_is_said_once_and_the_watch_goes_on(home, tmp_path, embedder, caplog):
    """A pass that raises (here: its Collection closed under it) must not end the watch: it
    says so and starts again, and a later change is synced."""
    from semsearch.collection import index_files
    from semsearch.server.metrics import Metrics
    from semsearch.server.watching import Watch

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    index_files("notes", [notes], embedder=embedder)
    stop = threading.Event()
    watch = Watch("notes", home / "notes", source_runs("notes")[0], 0.05, embedder, Metrics(), stop)
    with caplog.at_level(logging.WARNING, logger="semsearch"):
        watch.thread.start()
        try:
            wait_for(lambda: watch.passes >= 1, "the first pass")
            first = watch.coll
            first.close()
            (notes / "b.txt").write_text("The rocket carried a satellite into orbit.")
            wait_for(lambda: watch.error is not None or watch.passes >= 2, "the failed pass")
            (notes / "c.txt").write_text("Knead the dough and bake the bread.")

            def synced():
                with Collection.open("notes") as coll:
                    return {os.path.basename(d.source) for d in coll.documents()} == {"a.txt", "b.txt", "c.txt"}
            wait_for(synced, "the later changes synced")
            assert watch.coll is not first and watch.error is None
        finally:
            stop.set()
            watch.thread.join(WAIT)
    assert not watch.thread.is_alive()
    failed = [r.getMessage() for r in caplog.records if "watch of notes failed" in r.getMessage()]
    assert len(failed) == 1 and "closed" in failed[0], caplog.text


def test_sigterm_during_a_pass_ends_it_at_its_next_write_with_what_it_wrote_committed(env, tmp_path):
    """Shutdown closes a watch's Collection while it embeds: the write in progress commits,
    the pass stops at its next one, and the server's drain and exit go on as without --watch."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    cli(env, "index", notes, "--name", "notes", "--chunk-tokens", "16", "--overlap", "4")
    server = Server(env, "--watch", "--every", 0.5)
    try:
        batch = tmp_path / "batch"  # made outside, then moved in whole: one pass sees all of it
        batch.mkdir()
        for i in range(120):  # a pass of ~3,600 chunks: a commit every 1,024 (ingest.FLUSH_CHUNKS)
            (batch / f"n{i:03d}.txt").write_text(" ".join([f"Note {i} is about ships, harbours and the sea."] * 30))
        batch.rename(notes / "batch")
        wait_for(lambda: len(ids(server)) > 1, "the big pass's first commit")
        code = server.stop()
    finally:
        server.kill()
    err = "\n".join(server.lines)
    assert code in (0, -signal.SIGTERM) and "Traceback" not in err and "did not stop" not in err, err
    with Collection.open(tmp_path / "indexes" / "notes") as coll:
        stored = coll.count() - 1
        assert 0 < stored < 120, stored  # stopped mid-pass, its commits kept
        assert coll.check()["ok"], coll.check()


def test_a_collection_removed_while_watched_is_not_made_again(env, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    cli(env, "index", notes, "--name", "notes")
    server = Server(env, "--watch", "--every", 0.5)
    try:
        wait_for(lambda: server.get("/v1/collections/notes").json().get("watching", {}).get("passes"),
                 "the first pass")
        cli(env, "rm", "notes", "--yes")
        (notes / "b.txt").write_text("The rocket carried a satellite into orbit.")
        wait_for(lambda: "notes was removed; not watching it any more" in server.lines, "the watch's end")
        assert not (tmp_path / "indexes" / "notes").exists()
        assert server.get("/v1/collections/notes").status_code == 404
        assert server.get("/healthz").status_code == 200
        code = server.stop()
    finally:
        server.kill()
    assert code in (0, -signal.SIGTERM) and "Traceback" not in "\n".join(server.lines), server.lines
