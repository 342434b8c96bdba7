"""A disk that fills and empties while writers run and are SIGKILLed: torture.py's soak on a
small tmpfs.

Not part of the test suite. The collection lives on a tmpfs of a few MiB this script mounts
(root only) and always unmounts. Each round runs torture.py's round (real `semsearch` `add`,
`delete`, `index`, `search`, `info` processes, a few at once, some SIGKILLed; with --serve a
real `semsearch serve` with HTTP writes, sometimes SIGKILLed), in some rounds with a bulk
`add --jsonl` large enough to save the index file, while a filler file on the tmpfs changes
at random moments: grown to leave a random 0-200 KiB free (a quarter of the time, up to a
third of the disk), or removed. Then the filler is removed and torture.py's checks run: the
collection opens, every document a command that exited 0 wrote is there with its text,
nothing never written is there, the index is in step with the store
(torture.index_out_of_step), `info` and one more `add` work, no temporary file is left. Exits allowed: 0, 74 (the disk is full: one `error:` line), 75
(the writer lock is busy), -9 (killed), 3 for a delete, get or similar of an id not there; HTTP 507, 409,
404, 503. Anything else (1, a traceback, SIGBUS -7) is a defect. A run of `index` that
exits 74 may have stored some documents (it commits each), so it counts as a killed one.

    nice -n 19 .venv/bin/python benchmarks/disk_soak.py --minutes 10 [--serve] [--seed N]

It prints the error and warning lines seen, counted by kind, and stops at the first defect,
keeping that round's logs (--keep-going: count them all).
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import torture
from torture import ABSENT, NAME, WORDS, Op, Torture, nonce, version

LIMIT = 64 << 20  # never fill a filesystem larger than this: it is not ours
BULK = 1050  # documents in a bulk add: more than collection.SAVE_FLOOR, so its writer saves the index file
FILLER = "filler"
# the exits that are no defect here (torture.py's BENIGN allows 3 for `rm`'s races; no `rm` runs here;
# a read's 3 torture checks names a document that may be missing)
BENIGN = {kind: {74, 75} | ({3} if kind == "delete" or kind in torture.READS else set())
          for kind in [*torture.WEIGHTS, "bulk"] if kind not in ("rm", *torture.RAY)}
BENIGN.update(dict.fromkeys(torture.HTTP_WEIGHTS, torture.HTTP_BENIGN | {507}))


class DiskSoak(Torture):
    """torture.Torture with its SEMSEARCH_HOME on a tmpfs that a filler fills and empties."""
    benign = BENIGN

    def __init__(self, args):
        super().__init__(args)
        self.disk = self.work / "disk"
        self.disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mb}m", "tmpfs", str(self.disk)],
                       check=True, capture_output=True, text=True)
        try:
            self.ours()  # else nothing is written there
        except RuntimeError:
            self.umount()
            raise
        self.home = self.disk / "home"
        self.home.mkdir()
        self.env["SEMSEARCH_HOME"] = str(self.home)
        self.coll = self.home / NAME
        self.fills = self.empties = self.resets = 0
        self.lines: Counter = Counter()  # (kind, exit, error or warning line made general) -> times
        self.exits: Counter = Counter()  # (kind, exit) -> times
        self.stop_filler = threading.Event()
        self.filler: threading.Thread | None = None
        self.unsafe: str | None = None

    # -- the tmpfs ------------------------------------------------------------------------------
    def ours(self) -> None:
        """Raise unless self.disk is still the small tmpfs we mounted: checked before each fill."""
        st = os.statvfs(self.disk)
        if not os.path.ismount(self.disk) or st.f_blocks * st.f_frsize > LIMIT:
            raise RuntimeError(f"{self.disk} is not the soak's tmpfs ({st.f_blocks * st.f_frsize} bytes): not filling it")

    def fill(self, left: int) -> None:
        """Leave about ``left`` bytes free on the tmpfs, by a filler file there (and nowhere else)."""
        self.ours()
        self.empty()
        fd = os.open(self.disk / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            st = os.fstatvfs(fd)  # the file's own filesystem, whatever became of the mount since
            if st.f_blocks * st.f_frsize > LIMIT:
                raise RuntimeError(f"{self.disk / FILLER} is not on the soak's tmpfs: not filling it")
            todo = min(st.f_bavail * st.f_frsize - left, LIMIT)
            while todo > 0:
                todo -= os.write(fd, bytes(min(todo, 1 << 20)))
        except OSError as exc:  # a writer took the room first: full is full
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        self.fills += 1

    def left(self, rng: random.Random) -> int:
        """How much room a fill leaves: 0-200 KiB (a write's log does not fit), or in a quarter
        of the fills up to a third of the disk (some writes fit, perhaps not their index file)."""
        if rng.random() < 0.75:
            return rng.randint(0, 200 << 10)
        return rng.randint(200 << 10, (self.args.size_mb << 20) // 3)

    def empty(self) -> None:
        (self.disk / FILLER).unlink(missing_ok=True)

    def fill_and_empty(self, rng: random.Random) -> None:
        """The filler thread of a round: at random moments, fill (to leave self.left()) or empty."""
        try:
            while not self.stop_filler.wait(rng.uniform(0.1, 2.0)):
                if rng.random() < 0.7:
                    self.fill(self.left(rng))
                else:
                    self.empty()
                    self.empties += 1
        except Exception as exc:  # noqa: BLE001 - the main thread stops the run on it
            self.unsafe = f"the filler stopped: {type(exc).__name__}: {exc}"

    def umount(self) -> None:
        if self.server:
            self.server.stop()  # it holds the collection's files open
        if os.path.ismount(self.disk) and subprocess.run(["umount", str(self.disk)]).returncode:
            subprocess.run(["umount", "--lazy", str(self.disk)], check=True)

    # -- a round: torture's, with the filler running until its commands are done ------------------
    def round(self) -> None:
        rng = random.Random(f"{self.args.seed}-{self.rounds}")
        if rng.random() < 0.5:
            self.fill(self.left(rng))  # the round starts on a (nearly) full disk
        self.stop_filler.clear()
        self.filler = threading.Thread(target=self.fill_and_empty, args=(rng,))
        self.filler.start()
        try:
            super().round()
        finally:
            self.stop_filler.set()
            self.filler.join()
            self.empty()
        if self.unsafe:
            raise SystemExit(self.unsafe)
        if sum(f.stat().st_size for f in self.coll.rglob("*") if f.is_file()) > self.args.size_mb * (1 << 20) // 3:
            self.reset()

    def plan(self) -> list:
        """torture's commands but `rm` (one collection per disk), and in some rounds a bulk
        `add --jsonl` of BULK one-chunk documents: one transaction large enough that its
        writer saves the index file too (collection.SAVE_FLOOR), which a full disk may refuse."""
        ops = [op for op in super().plan() if op.kind != "rm"]
        rng = self.rng
        if rng.random() < self.args.bulk:
            records = {f"b{nonce(rng)}": f"{nonce(rng)} " + " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
                       for _ in range(BULK)}
            path = self.work / "bulk" / f"r{self.rounds}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in records.items()))
            op = Op("bulk", ["add", NAME, "--jsonl", str(path)], {k: version(t, {}) for k, t in records.items()})
            if rng.random() < self.args.kill:
                op.kill_at = rng.uniform(0, 0.4) if rng.random() < 0.25 else self.took["bulk"] * rng.uniform(0.5, 1.1)
            for key, v in op.effects.items():
                self.history[key].add(v)
            ops.insert(rng.randint(0, len(ops)), op)
        return ops

    def outcomes(self, ops: list) -> list[str]:
        """Called once the round's commands are done: stop the filler and empty the disk
        before torture's checks; count each exit and its error and warning lines."""
        self.stop_filler.set()
        self.filler.join()
        self.empty()
        for op in ops:
            rc = "killed" if op.killed else op.rc
            self.exits[op.kind, rc] += 1
            for line in op.err.splitlines():
                if line.startswith(("error:", "warning:")) or "Traceback" in line:
                    self.lines[op.kind, rc, self.general(line)] += 1
        return super().outcomes(ops)

    def general(self, line: str) -> str:
        """An error line with its paths, ids and numbers made general, to count it by kind."""
        line = line.replace(str(self.coll), "<coll>").replace(str(self.work), "<work>")
        line = re.sub(r"\b[kb]?q[a-z]{9}\b", "<id>", line)
        return re.sub(r"\d+(\.\d+)?", "N", line)[:220]

    def may_commit(self, op: Op) -> bool:
        """As torture's, and an `index` that stopped on the full disk (74) may have stored some
        of its documents, as a killed one may."""
        return super().may_commit(op) or (op.kind == "index" and op.rc == 74)

    def reset(self) -> None:
        """A new collection once this one takes a third of the disk (with the server stopped: a
        removed file it holds open keeps its space on a tmpfs)."""
        if self.server:
            self.server.stop()
        shutil.rmtree(self.coll)
        self.state = {key: {ABSENT} for key in self.state}
        self.resets += 1
        self.defects += [f"round {self.rounds} (reset): {d}" for d in self.write_sentinel()]
        if self.server:
            self.defects += self.server.start()


def main() -> int:
    parser = torture.arguments(__doc__.split("\n\n")[0], minutes=10)
    parser.add_argument("--size-mb", type=int, default=12, help="the tmpfs's size (at most 64)")
    parser.add_argument("--bulk", type=float, default=0.3, help=f"share of rounds with a bulk add of {BULK} documents")
    args = parser.parse_args()
    if not 0 < args.size_mb <= LIMIT >> 20:
        parser.error(f"--size-mb must be 1..{LIMIT >> 20}")
    args.seed = args.seed if args.seed is not None else time.time_ns() % 2**31
    args.ray = False
    t = DiskSoak(args)
    print(f"seed {args.seed}; work in {t.work}; a {args.size_mb} MiB tmpfs at {t.disk}", flush=True)
    until = time.time() + 60 * args.minutes
    try:
        t.defects += t.write_sentinel() + (t.server.start() if t.server else [])
        while t.rounds < args.rounds and time.time() < until and not (t.defects and not args.keep_going):
            t.round()
            if t.rounds % 5 == 0:
                print(f"{t.rounds} rounds, {t.commands} commands, {t.kills} killed, {t.fills} fills, "
                      f"{len(t.defects)} defects", flush=True)
    finally:
        t.umount()
    print(f"done: {t.rounds} rounds, {t.commands} commands, {t.kills} killed, {t.fills} fills, {t.empties} "
          f"empties, {t.resets} new collections"
          + (f", server killed {t.server_kills} times" if t.server else "")
          + f", {len(t.defects)} defects (seed {args.seed})", flush=True)
    print("exits: " + ", ".join(f"{k} {rc}: {n}" for (k, rc), n in sorted(t.exits.items(), key=str)))
    for (kind, rc, line), n in sorted(t.lines.items(), key=lambda x: -x[1]):
        print(f"{n:5}  {kind} {rc}: {line}")
    if not t.defects:
        shutil.rmtree(t.work)
    return 1 if t.defects else 0


if __name__ == "__main__":
    sys.exit(main())
