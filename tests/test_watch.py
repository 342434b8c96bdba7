"""`index --watch` (semsearch/watch.py): a collection kept in step with folders, with the
real model, real files and a real `python -m semsearch index --watch` process.

The library tests script the watch through its ``stop`` event: the watch waits on it
between polls, so each step of the test runs at a known point, between two polls, and
the next poll sees all of it: no sleeps, nothing timed. The process test waits for
each change to show in the collection, bounded."""
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import InvalidInput
from semsearch.watch import watch_files

WAIT = 60  # seconds any one change may take to show (a model load, a busy machine)


class Script(threading.Event):
    """A stop event whose every wait, between two polls of the watch, runs the test's next
    step (which may assert what the passes so far did) and then lets the poll run; once
    the steps are done, it stops the watch."""

    def __init__(self, *steps):
        super().__init__()
        self.steps = list(steps)

    def wait(self, timeout=None):
        if not self.steps:
            self.set()
            return True
        self.steps.pop(0)()
        return False


def count(name="notes"):
    with Collection.open(name) as coll:
        return coll.count()


def texts(name="notes"):
    with Collection.open(name) as coll:
        return {os.path.basename(d.source or d.id): d.text for d in coll.documents()}


def test_a_watch_syncs_each_change_in_one_pass_and_says_a_skip_once(home, tmp_path, embedder, caplog):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    (notes / "b.md").write_text("The rocket carried a satellite into orbit.")
    passes = []

    def burst():  # several edits between two polls
        assert len(passes) == 1  # the poll before found nothing changed: no pass
        (notes / "a.txt").write_text("Cats chase mice at night.")
        (notes / "c.txt").write_text("Knead the dough and bake the loaf.")
        (notes / "d.txt").write_text("Tomatoes need sun and water.")
        (notes / "b.md").unlink()

    def recreate():
        report = passes[1].report
        assert (len(passes), report.added, report.updated, report.removed) == (2, 2, 1, 1)
        assert texts() == {"a.txt": "Cats chase mice at night.", "c.txt": "Knead the dough and bake the loaf.",
                           "d.txt": "Tomatoes need sun and water."}
        (notes / "c.txt").unlink()  # gone and back between two polls, as long as it was
        (notes / "c.txt").write_text("Knead the dough and fry the loaf.")
        (notes / "blob.txt").write_bytes(b"\x00\x01binary\x00")

    def half_written():
        assert len(passes) == 3 and passes[2].report.updated == 1
        assert passes[2].new_skips == [(str(notes / "blob.txt"), "binary file")]
        assert texts()["c.txt"] == "Knead the dough and fry the loaf."
        (notes / "e.txt").write_text("The first half of a note")

    def finished():
        assert len(passes) == 4 and passes[3].report.added == 1
        assert texts()["e.txt"] == "The first half of a note"  # as it was when polled
        with open(notes / "e.txt", "a") as f:
            f.write(" and its second half.")

    def touched():
        assert len(passes) == 5 and passes[4].report.updated == 1
        assert texts()["e.txt"] == "The first half of a note and its second half."
        assert passes[4].new_skips == []  # blob.txt is skipped still, and said once
        assert passes[4].report.unchanged == 0  # only the file that changed was read
        os.utime(notes / "d.txt")  # a new mtime, the same text

    def folder_gone():
        assert len(passes) == 6 and not passes[5].changed  # synced, nothing written, nothing to say
        assert passes[5].report.unchanged == 1  # d.txt read again, the 3 others not
        notes.rename(tmp_path / "away")

    def still_gone():
        assert len(passes) == 6  # no pass while the folder is missing: its documents stay
        assert set(texts()) == {"a.txt", "c.txt", "d.txt", "e.txt"}

    def back():
        assert len(passes) == 6
        (tmp_path / "away").rename(notes)

    def after_back():
        assert len(passes) == 6  # back as it was: nothing to sync

    with caplog.at_level(logging.WARNING, logger="semsearch"):
        watched = watch_files("notes", [notes], every=0.01, on_pass=passes.append, embedder=embedder,
                              stop=Script(lambda: None, burst, recreate, half_written, finished, touched,
                                          folder_gone, still_gone, back, after_back))
    assert (watched.passes, watched.polls, watched.documents) == (6, 10, 4)
    assert watched.skipped == [(str(notes / "blob.txt"), "binary file")]
    missing = [r.getMessage() for r in caplog.records if "no sync until it is back" in r.getMessage()]
    assert len(missing) == 1 and str(notes) in missing[0], caplog.text  # said once, not every poll
    assert sum("watching again" in r.getMessage() for r in caplog.records) == 1


def test_a_watch_leaves_out_what_its_excludes_and_globs_leave_out(home, tmp_path, embedder):
    """Edits under an excluded folder, or to a file no glob selects, set off no pass; the
    watch's passes read and remove by the same rule as its first one."""
    notes = tmp_path / "notes"
    (notes / "node_modules").mkdir(parents=True)
    (notes / "a.md").write_text("Cats purr and sleep most of the day.")
    (notes / "b.txt").write_text("Not a markdown file: never taken.")
    (notes / "node_modules" / "x.md").write_text("A vendored readme.")
    passes = []

    def vendored():
        assert [p.report.added for p in passes] == [1]
        (notes / "node_modules" / "y.md").write_text("Another vendored readme.")
        (notes / "node_modules" / "x.md").unlink()
        (notes / "b.txt").write_text("Still not markdown.")

    def selected():
        assert len(passes) == 1  # nothing it takes changed: no pass
        (notes / "c.md").write_text("Rockets carry satellites into orbit.")
        (notes / "a.md").unlink()

    def done():
        assert [(p.report.added, p.report.removed) for p in passes] == [(1, 0), (1, 1)]

    watch_files("notes", [notes], every=0.01, stop=Script(vendored, selected, done), on_pass=passes.append,
                glob="*.md", exclude="node_modules", embedder=embedder)
    assert set(texts()) == {"c.md"}


class Counting(threading.Event):
    """A plain stop event that counts the watch's waits on it (one before each poll)."""
    waits = 0

    def wait(self, timeout=None):
        self.waits += 1
        return super().wait(timeout)


def test_an_idle_watch_runs_no_pass_and_its_stop_event_ends_it(home, tmp_path, embedder):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    passes, stop, result = [], Counting(), {}
    watcher = threading.Thread(target=lambda: result.update(watched=watch_files(
        "notes", [notes], every=0.01, stop=stop, on_pass=passes.append, embedder=embedder)))
    watcher.start()
    try:
        wait_for(lambda: stop.waits >= 20, "20 polls")
    finally:
        stop.set()
        watcher.join(WAIT)
    assert not watcher.is_alive()
    assert len(passes) == 1 and passes[0].report.added == 1  # the first pass, then idle polls only
    assert result["watched"].passes == 1 and result["watched"].polls >= 19


def test_every_is_checked_before_anything_is_made(home, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for every in (0, -1, float("nan"), float("inf"), "2", 1e9):
        with pytest.raises(InvalidInput, match="every"):
            watch_files("notes", [notes], every=every)
    assert not home.exists()


@pytest.mark.parametrize("args, says", [
    (["--watch", "--every", "0"], "every (seconds) must be at least"),
    (["--watch", "--every", "nan"], "every (seconds) must be a finite number"),
    (["--every", "5"], "give --watch too"),
    (["--watch", "--ray"], "--watch does not run on Ray"),
], ids=["every 0", "every nan", "every without watch", "watch with ray"])
def test_bad_watch_options_are_one_line_errors_that_make_nothing(home, tmp_path, args, says):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr.")
    result = CliRunner().invoke(cli, ["index", str(notes), "--name", "notes", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert not home.exists()


def test_index_help_explains_watch():
    text = CliRunner().invoke(cli, ["index", "--help"]).output
    assert "--watch" in text and "--every SECONDS" in text and "half-written" in text


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {WAIT}s: {what}")


class Watching:
    """A `semsearch index --watch` process, its stdout and stderr in files."""

    def __init__(self, notes, out, *options):
        self.out, self.err = out.with_suffix(".out"), out.with_suffix(".err")
        with open(self.out, "w") as stdout, open(self.err, "w") as stderr:
            self.child = subprocess.Popen([sys.executable, "-m", "semsearch", "index", str(notes), "--name", "notes",
                                           "--watch", "--every", "0.1", *options], stdout=stdout, stderr=stderr)

    def lines(self):
        return self.out.read_text().splitlines()

    def stop(self, signum):
        self.child.send_signal(signum)
        code = self.child.wait(WAIT)
        return code, self.lines(), self.err.read_text()

    def kill(self):
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def write(path, text):
    """As editors save: a hidden temporary file (the walk skips it) renamed over the file."""
    temporary = path.with_name("." + path.name + ".tmp")
    temporary.write_text(text)
    temporary.rename(path)


PASS_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d notes: added (\d+), updated (\d+), removed (\d+), "
                       r"skipped (\d+); \d+ documents in the collection")


def counts(lines):
    """added, updated, removed and skipped summed over the pass lines (local time first)."""
    found = [PASS_LINE.fullmatch(line) for line in lines]
    return [sum(int(m[i]) for m in found if m) for i in range(1, 5)]


def test_the_watch_command_follows_edits_lets_others_write_and_stops_on_a_signal(home, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    write(notes / "a.txt", "Cats purr and sleep most of the day.")
    write(notes / "b.txt", "The rocket carried a satellite into orbit.")
    watch = Watching(notes, tmp_path / "first")
    try:
        wait_for(lambda: watch.lines(), "the first pass's line")
        assert watch.lines()[0].startswith("notes: added 2, updated 0, unchanged 0, removed 0, skipped 0;")

        write(notes / "c.txt", "Knead the dough, let it rise, bake the loaf.")
        wait_for(lambda: "c.txt" in texts(), "a new file indexed")
        assert texts()["c.txt"] == "Knead the dough, let it rise, bake the loaf."

        # another writer of the same collection gets in while the watch runs
        added = subprocess.run([sys.executable, "-m", "semsearch", "add", "notes", "--text", "A note added by hand",
                                "--id", "by-hand"], capture_output=True, text=True, timeout=WAIT)
        assert added.returncode == 0, added.stderr
        assert watch.child.poll() is None

        (notes / "a.txt").unlink()
        write(notes / "b.txt", "The rocket landed back on its pad.")
        wait_for(lambda: "a.txt" not in texts() and texts().get("b.txt", "").endswith("pad."), "an edit and a delete")
        assert texts()["by-hand"] == "A note added by hand"  # not a file under PATHS: the watch leaves it
        wait_for(lambda: len(watch.lines()) >= 3 and counts(watch.lines()[1:]) == [1, 1, 1, 0], "the pass lines")

        code, lines, err = watch.stop(signal.SIGINT)
    finally:
        watch.kill()
    assert code == 0 and "Traceback" not in err, err
    passes = lines[1:-1]
    assert all(PASS_LINE.fullmatch(line) for line in passes), lines
    assert counts(passes) == [1, 1, 1, 0], lines  # in two passes or three: a poll may fall between two edits
    stopped = re.fullmatch(r"notes: stopped watching after (\d+) sync pass\(es\); 3 documents in the collection",
                           lines[-1])
    assert stopped and int(stopped[1]) > len(passes), lines  # a pass that changed nothing says nothing

    watch = Watching(notes, tmp_path / "second")  # the next run finds it all in sync; SIGTERM ends it too
    try:
        wait_for(lambda: watch.lines(), "the first pass's line")
        assert watch.lines()[0].startswith("notes: added 0, updated 0, unchanged 2, removed 0, skipped 0;")
        code, lines, err = watch.stop(signal.SIGTERM)
    finally:
        watch.kill()
    assert code == 0 and "Traceback" not in err, err
    assert lines[-1] == "notes: stopped watching after 1 sync pass(es); 3 documents in the collection", lines


def test_a_signal_during_a_pass_stops_the_watch_as_it_stops_index(home, tmp_path):
    """Mid-pass, SIGINT is Ctrl-C in `index`: exit 130, saying what the pass had stored."""
    notes = tmp_path / "notes"
    notes.mkdir()
    write(notes / "a.txt", "Cats purr and sleep most of the day.")
    watch = Watching(notes, tmp_path / "mid", "--chunk-tokens", "16", "--overlap", "4")
    try:
        wait_for(lambda: watch.lines(), "the first pass's line")
        batch = notes / ".batch"  # hidden while it is written, then there at once: one pass sees it whole
        batch.mkdir()
        for i in range(120):  # a pass of ~3,600 chunks: a commit every 1,024 (ingest.FLUSH_CHUNKS)
            (batch / f"n{i:03d}.txt").write_text(" ".join([f"Note {i} is about ships, harbours and the sea."] * 30))
        batch.rename(notes / "batch")
        wait_for(lambda: count() > 1, "the big pass's first commit")
        code, lines, err = watch.stop(signal.SIGINT)
    finally:
        watch.kill()
    stored = count() - 1
    assert code == 130 and "Traceback" not in err, err
    assert 0 < stored < 120 and len(lines) == 1, lines
    assert err.splitlines()[-1] == f"interrupted: the {stored} document(s) this run wrote before it are stored", err


def test_a_pass_that_finds_the_collection_busy_runs_again_at_the_next_poll(home, tmp_path, embedder,
                                                                             monkeypatch, caplog):
    """Another writer holding the lock past a write's wait fails that pass, not the watch."""
    from semsearch import collection
    monkeypatch.setattr(collection, "LOCK_WAIT", 0.2)  # a write waits 0.2 s for the lock, not 10
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Cats purr and sleep most of the day.")
    passes, held = [], []

    def hold():  # a change, and the writer lock held as another process would hold it
        (notes / "b.txt").write_text("The rocket carried a satellite into orbit.")
        held.append(collection._acquire(home / "notes", 0))
        assert held[0] is not None

    def release():
        assert len(passes) == 1 and "b.txt" not in texts()  # the busy pass wrote nothing, counted none
        held[0].release()

    def after():
        assert len(passes) == 2 and passes[1].report.added == 1 and "b.txt" in texts()

    with caplog.at_level(logging.WARNING, logger="semsearch"):
        watched = watch_files("notes", [notes], every=0.01, on_pass=passes.append, embedder=embedder,
                              stop=Script(hold, release, after))
    assert watched.passes == 2
    assert sum("syncing again at the next poll" in r.getMessage() for r in caplog.records) == 1, caplog.text


def test_a_later_pass_reads_only_what_changed_and_drops_what_it_no_longer_holds(home, tmp_path, embedder):
    """A record dropped from a .jsonl goes, a removed folder's documents go (in one write),
    and the files that did not change are not read again."""
    import json
    import shutil
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    recs = [{"id": f"r{i}", "text": t} for i, t in enumerate(["Cats purr.", "Rockets fly.", "Bread rises."])]
    (notes / "recs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for i, text in enumerate(["Tides turn.", "Gulls cry.", "Ropes fray."]):
        (notes / "sub" / f"s{i}.txt").write_text(text)
    (notes / "x.txt").write_text("The harbour master logs the weather.")
    passes = []

    def change():
        assert len(passes) == 1 and passes[0].report.added == 7
        (notes / "recs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r["id"] != "r1"))
        shutil.rmtree(notes / "sub")

    def check():
        report = passes[1].report
        assert (len(passes), report.added, report.updated, report.removed) == (2, 0, 0, 4)
        assert report.unchanged == 2  # r0 and r2, read again with their file; x.txt not read
        with Collection.open("notes") as coll:
            ids = sorted(d.id for d in coll.documents(text=False))
        assert ids == sorted([f"{notes / 'recs.jsonl'}#r0", f"{notes / 'recs.jsonl'}#r2", str(notes / "x.txt")])

    watch_files("notes", [notes], every=0.01, on_pass=passes.append, embedder=embedder,
                stop=Script(change, check))
