"""Embedder: text -> L2-normalised float32 vectors with ONNX Runtime.

Texts are tokenised in windows, sorted by token length inside a window and cut into
batches where padding plus the runs' fixed cost is least, within a token budget; results
come back in input order. Windows grow from a small first one, so the first model run
starts early, and shrink again at the end, so little runs after the last is tokenised.
On a GPU, tokenising, padding and the model run overlap in three threads (on 8+ cores the
tokenising itself runs in worker processes, so it never holds the GIL the runs need), and
for fp16 the padded width is rounded up to bucket widths (and a short batch's rows to a
power of two, in ``run`` too), so the set of shapes stays small. Pooling and normalisation are inside the exported
graph (see export.py), so a run returns ``(batch, dim)`` directly. How a graph is run
(providers, IO binding, padding) lives in runtime.py.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import InvalidInput, ModelError
from .models import (MANIFEST, PROBES, check_variant, read_manifest, sha256_file, variant_file,
                     variant_state, write_manifest)
from .progress import bar
from .validation import positive_int, text_list
from .runtime import (DEVICES, Session, TokenizerProcesses, Tokens, cpu_cores, encode, load_tokenizer, onnxruntime,
                      single_types_are_zero, tokenizer_processes)

log = logging.getLogger("semsearch")

__all__ = ["Embedder", "Tokens", "plan_batches", "DEVICES"]

# Batching defaults per device (measured: benchmarks/README.md). On the 2-core CPU, 32 rows
# was the best batch and padding is paid in FLOPs; on the GPU, large batches fill it. Only
# fp16 on the GPU pads to bucket widths: its kernels pay 40-115 ms the first time they meet
# a (rows, width) shape, while exact fp32 is GPU-bound and ran 5-10 % faster at exact widths.
# ``run_cost`` is a model run's fixed cost in padded tokens, for cutting batches: on the
# H200 a run of 32 short rows took 1.8 ms (fp32) where its tokens alone take 0.4 ms (0.68 µs
# a token, from the 1,024-row runs); on the CPU a run costs about what a token does, so
# batches there are cut almost by padding alone. fp16 on the GPU waits on the tokeniser, not
# the GPU, and each new (rows, width) costs it 40-115 ms once: a higher cost keeps its
# shapes few (its own run cost, 1.1 ms against 0.1 ms of tokens, is ~6,000 tokens; 20,000
# makes 3 to 5 fewer shapes for the same modelled speed: benchmarks/batch_plan.py).
CPU_BATCH = {"max_batch_tokens": 8192, "max_batch_size": 32, "overlap": False, "run_cost": 64}
GPU_BATCH = {"max_batch_tokens": 65536, "max_batch_size": 1024, "overlap": True, "run_cost": 2000}
GPU_FP16_RUN_COST = 20000
# Bucket widths for padded batches: steps of 8 tokens up to 64, then at most 1/8 wider than
# the one before (measured on an H200: a coarser ladder padded 9-13 % more tokens than exact
# widths and cost fp32, which is GPU-bound, as much).
WIDTH_LADDER = (*range(8, 65, 8), 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
                288, 320, 352, 384, 416, 448, 480, 512)
MAX_BATCH_TOKENS = 1 << 24  # a batch past this is tens of GB of activations on any device
WINDOW = 4096  # texts tokenised (and length-sorted) together
FIRST_WINDOW = 512  # the first window of a call: the first run waits for it alone


class Embedder:
    """An exported model loaded into an ONNX Runtime session. Thread-safe: nothing is
    mutated by ``embed``, so one Embedder may serve many threads."""

    def __init__(self, folder: Path, manifest: dict, variant: str, session: Session, tokenizer):
        self.folder = folder
        self.manifest = manifest
        self.variant = variant
        self.session = session
        self.tokenizer = tokenizer
        self.dim: int = manifest["dim"]
        self.max_length: int = manifest["max_length"]
        self.providers: list[str] = session.providers
        self._types = not single_types_are_zero(tokenizer)
        defaults = GPU_BATCH if session.on_gpu else CPU_BATCH
        self.max_batch_tokens: int = defaults["max_batch_tokens"]
        self.max_batch_size: int = defaults["max_batch_size"]
        fp16_gpu = session.on_gpu and variant == "fp16"
        self.widths: tuple[int, ...] | None = bucket_widths(self.max_length) if fp16_gpu else None
        self.run_cost: int = GPU_FP16_RUN_COST if fp16_gpu else defaults["run_cost"]
        self.overlap: bool = defaults["overlap"]
        self.window: int = WINDOW
        self.first_window: int = FIRST_WINDOW
        # where the pipeline tokenises (GPU, 8+ cores: in worker processes; see TokenizerProcesses)
        self.tokenizing = TokenizerProcesses(
            tokenizer, self._types, *(tokenizer_processes(cpu_cores()) if session.on_gpu else (0, 1)))

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, variant: str = "fp32",
             device: str = "auto", threads: int | None = None) -> "Embedder":
        """Load ``model`` (default model, local HF folder, exported folder or hub id).

        A model that has not been exported yet is exported once into the cache, which
        needs the ``export`` extra (torch, optimum).
        """
        from .export import ensure_exported  # the one place the query path reaches export

        return cls.from_folder(ensure_exported(model), variant, device=device, threads=threads)

    @classmethod
    def from_folder(cls, folder: str | Path, variant: str = "fp32", device: str = "auto",
                    threads: int | None = None, manifest: dict | None = None,
                    verify: bool = True) -> "Embedder":
        """Load an exported folder (no export extra needed). The ONNX file is hashed on a
        thread while ONNX Runtime loads it, so the check costs no wall time on 2+ cores."""
        folder = Path(folder)
        manifest = manifest or read_manifest(folder)
        onnx_path = variant_file(folder, manifest, variant)
        with ThreadPoolExecutor(1) as pool:
            digest = pool.submit(sha256_file, onnx_path) if verify else None
            tokenizer = load_tokenizer(folder, manifest["max_length"])
            session = Session(onnx_path, device, variant, threads, manifest.get("output", "sentence_embedding"))
            if digest is not None and digest.result() != manifest["variants"][variant]["sha256"]:
                raise ModelError(f"{onnx_path} does not match its manifest (corrupt or replaced); "
                                 "re-export with `semsearch export --force`")
        embedder = cls(folder, manifest, variant, session, tokenizer)
        if session.on_gpu and not manifest["variants"][variant].get("validated"):
            embedder.validate()
        return embedder

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.folder.name)

    def __repr__(self) -> str:
        return f"<Embedder {self.name} {self.variant} {self.dim}-d on {self.providers[0]}>"

    # -- the steps ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str] | str, kind: str | None = None) -> Tokens:
        """Token ids of ``texts`` (with the model's query/passage prefix for ``kind``)."""
        return encode(self.tokenizer, self._prefixed(text_list(texts), kind), self._types)

    def run(self, tokens: Tokens, max_batch_size: int | None = None,
            max_batch_tokens: int | None = None) -> np.ndarray:
        """ONE model run over ``tokens`` (the caller chose the batch, under these limits):
        ``(len, dim)`` float32."""
        if not len(tokens):
            return np.empty((0, self.dim), dtype=np.float32)
        rows_cap, budget = self._limits(max_batch_size, max_batch_tokens)
        width = bucket(int(tokens.lengths.max()), self.widths)
        rows = self._rows(len(tokens), width, budget, rows_cap)
        return self._checked(self.session.run(tokens.arrays(width, rows)), len(tokens))

    def embed(self, texts: Sequence[str] | str, batch_size: int | None = None, kind: str | None = None,
              progress: bool = False, max_batch_tokens: int | None = None) -> np.ndarray:
        """Embed ``texts``; returns ``(len(texts), dim)`` float32 rows in input order.

        ``kind`` ("query" or "passage") adds the model's prompt prefix, if it has one.
        ``batch_size`` caps the rows of a batch (alone, it also lifts the token budget);
        ``max_batch_tokens`` caps rows x padded width. Defaults suit the device.
        """
        return self.embed_counted(texts, kind=kind, batch_size=batch_size, progress=progress,
                                  max_batch_tokens=max_batch_tokens)[0]

    def embed_counted(self, texts: Sequence[str] | str, kind: str | None = None,
                      batch_size: int | None = None, progress: bool = False,
                      max_batch_tokens: int | None = None) -> tuple[np.ndarray, int, int]:
        """``embed``, plus the tokens embedded and how many texts were cut at max_length."""
        texts = text_list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        tokens = truncated = 0
        for _, window_tokens, window_truncated in self._windows(self._spans(texts), kind, batch_size,
                                                                 max_batch_tokens, progress, len(texts), out):
            tokens, truncated = tokens + window_tokens, truncated + window_truncated
        return out, tokens, truncated

    def embed_stream(self, texts: Iterable[str], kind: str | None = None, batch_size: int | None = None,
                     progress: bool = False, max_batch_tokens: int | None = None) -> Iterator[np.ndarray]:
        """``embed`` for texts of any number (a file read line by line, a generator):
        yields the ``(n, dim)`` vectors of each window of texts, in input order, as soon as it
        is embedded, so memory holds a few windows of texts and vectors, never all of them. A
        text that is not a string raises when its window is reached. Where the stages overlap
        (a GPU), ``texts`` is read on a worker thread: one that only this thread may read (a
        sqlite3 cursor) is to be read here, in slices each given to ``embed``."""
        for vectors, _, _ in self.stream_counted(texts, kind, batch_size, progress, max_batch_tokens):
            yield vectors

    def stream_counted(self, texts: Iterable[str], kind: str | None = None, batch_size: int | None = None,
                       progress: bool = False, max_batch_tokens: int | None = None
                       ) -> Iterator[tuple[np.ndarray, int, int]]:
        """``embed_stream``, each window with its tokens embedded and its texts cut at max_length."""
        if isinstance(texts, (Sequence, dict)) or not isinstance(texts, Iterable):
            # one string is one text; a list is checked whole, as embed checks it, and cut in
            # embed's windows: the same batches, so the same vectors (int8's too)
            texts = text_list(texts)
            return self._windows(self._spans(texts), kind, batch_size, max_batch_tokens, progress, len(texts))
        parts = text_windows(texts, self.window, self.first_window)
        return self._windows(parts, kind, batch_size, max_batch_tokens, progress, None)

    def _spans(self, texts: list[str]) -> Iterator[list[str]]:
        """``texts`` in the windows of ``window_spans``."""
        return (texts[start:stop] for start, stop in window_spans(len(texts), self.window, self.first_window))

    def _windows(self, parts: Iterable[list[str]], kind: str | None, batch_size: int | None,
                 max_batch_tokens: int | None, progress: bool, total: int | None,
                 out: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, int, int]]:
        """THE pipeline: windows of checked texts in, (vectors, tokens, truncated) of each
        window out, in order. Windows are tokenised, cut into batches and run, the three
        overlapped on a GPU; with ``out``, a window's vectors are written into it in place."""
        self._prefix(kind)  # validates kind before any work
        rows_cap, budget = self._limits(batch_size, max_batch_tokens)
        overlap = self.overlap and (total is None or total > rows_cap)

        def batches(tokenized: Iterable[Tokens]):
            for tokens in tokenized:
                for rows, feeds in self.prepare(tokens, rows_cap, budget):
                    yield tokens, rows, feeds
                yield tokens, None, None  # the window is complete: it goes out before the next is read

        prefixed = (self._prefixed(part, kind) for part in parts)
        tokenized = self.tokenizing.map(prefixed, workers=overlap)
        stream = batches(background(tokenized) if overlap else tokenized)
        stream = background(stream) if overlap else stream
        shown = bar(stream, progress and (total is None or total > rows_cap), unit="text", total=total,
                    weight=lambda item: 0 if item[1] is None else len(item[1]))
        vectors, done = None, 0
        for tokens, rows, feeds in shown:
            if vectors is None:
                vectors = (out[done:done + len(tokens)] if out is not None
                           else np.empty((len(tokens), self.dim), dtype=np.float32))
            if rows is None:
                yield vectors, int(tokens.lengths.sum()), tokens.truncated
                done, vectors = done + len(tokens), None
            else:
                vectors[rows] = self._checked(self.session.run(feeds), len(rows))

    def prepare(self, tokens: Tokens, max_batch_size: int | None = None,
                max_batch_tokens: int | None = None) -> Iterator[tuple[np.ndarray, dict]]:
        """The batches ``embed`` runs for ``tokens``: (row indices, padded input arrays)."""
        rows_cap, budget = self._limits(max_batch_size, max_batch_tokens)
        for rows in plan_batches(tokens.lengths, budget, rows_cap, self.widths, self.run_cost):
            part = tokens.select(rows)
            width = bucket(int(part.lengths.max()), self.widths)
            yield rows, part.arrays(width, self._rows(len(rows), width, budget, rows_cap))

    # -- helpers ------------------------------------------------------------------------------
    def _prefix(self, kind: str | None) -> str:
        if kind not in (None, "query", "passage"):
            raise InvalidInput(f"kind must be 'query', 'passage' or None, not {kind!r}")
        return self.manifest.get("prompts", {}).get(kind, "") if kind else ""

    def _prefixed(self, texts: list[str], kind: str | None) -> list[str]:
        prefix = self._prefix(kind)
        return [prefix + t for t in texts] if prefix else texts

    def _limits(self, batch_size: int | None, max_batch_tokens: int | None) -> tuple[int, int]:
        if batch_size is not None:
            batch_size = positive_int(batch_size, "batch_size", MAX_BATCH_TOKENS)
        if max_batch_tokens is not None:
            max_batch_tokens = positive_int(max_batch_tokens, "max_batch_tokens", MAX_BATCH_TOKENS)
        rows_cap = batch_size or self.max_batch_size
        if max_batch_tokens is None:
            max_batch_tokens = self.max_batch_tokens if batch_size is None else rows_cap * self.max_length
        return rows_cap, max_batch_tokens

    def _rows(self, rows: int, width: int, budget: int, rows_cap: int) -> int:
        return int(padded_rows(rows, full_rows(width, budget, rows_cap), self.widths))

    def _checked(self, vectors: np.ndarray, rows: int) -> np.ndarray:
        """The first ``rows`` vectors; NaN or inf never leaves the Embedder."""
        vectors = vectors[:rows]
        if not np.isfinite(vectors).all():
            raise ModelError(f"model {self.name} ({self.variant}) produced NaN/inf embeddings: its files "
                             f"in {self.folder} are corrupt; re-export with `semsearch export --force`")
        return vectors

    def validate(self) -> dict:
        """Check this variant against the fp32 graph on the CPU on the export's probe texts,
        record the figures in the manifest (or warn when the folder is read-only) and raise
        if it is outside its tolerance. Runs by itself on the first GPU load of a variant
        that was never validated (fp16 exported on a machine without a GPU)."""
        info = self.manifest["variants"][self.variant]
        if "fp32" not in self.manifest["variants"]:
            log.warning("%s %s is not validated and there is no fp32 graph to check it against",
                        self.name, self.variant)
            return info
        reference = Session(variant_file(self.folder, self.manifest, "fp32"), "cpu", "fp32",
                            output=self.session.output)
        tokens = self.tokenize(PROBES)
        figures = check_variant(self.variant, self.session.run(tokens.arrays()),
                                reference.run(tokens.arrays()))
        figures.update(validated_on=self.providers[0], reference="fp32 graph on the CPU",
                       validated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       onnxruntime=onnxruntime().__version__)
        info.pop("note", None)
        info.update(figures)
        try:
            write_manifest(self.folder, self.manifest)
        except OSError as exc:
            log.warning("%s %s: %s; could not record it in %s (%s)", self.name, self.variant,
                        variant_state(info), self.folder / MANIFEST, exc.strerror or exc)
        else:
            log.info("%s %s %s", self.name, self.variant, variant_state(info))
        if not figures["validated"]:
            raise ModelError(f"{self.name} {self.variant} fails validation on {self.providers[0]}: "
                             f"{variant_state(info)}; use fp32, or re-export")
        return info


def plan_batches(lengths, max_batch_tokens: int, max_batch_size: int,
                 widths: Sequence[int] | None = None, run_cost: int = 0) -> list[np.ndarray]:
    """Row indices of each batch: runs of the rows sorted longest first, each padded to
    its longest row (rounded up to ``widths``), at most ``max_batch_size`` rows and
    ``max_batch_tokens`` padded tokens, at least one row; cut where the padded tokens plus
    ``run_cost`` a batch are least. Cutting at fixed row counts instead padded short texts
    57 % beyond their tokens, as a batch spanned a quarter of the window's lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    padded = bucketed(lengths[order], widths)
    # A batch starts where the padded width changes (or where a cap cuts); cost[a] is the
    # least cost of the rows from the a-th such start on, found back to front.
    starts = np.flatnonzero(np.diff(padded, prepend=-1))
    bounds = np.append(starts, len(padded))
    cost, cut = np.zeros(len(bounds), dtype=np.int64), np.zeros(len(starts), dtype=np.int64)
    for a in range(len(starts) - 1, -1, -1):
        rows, width = bounds[a + 1:] - bounds[a], int(padded[bounds[a]])
        full = full_rows(width, max_batch_tokens, max_batch_size)
        runs = -(-rows // full)  # full batches, then the rest, padded as the Embedder pads it
        padded_tokens = width * ((runs - 1) * full + padded_rows(rows - (runs - 1) * full, full, widths))
        total = runs * run_cost + padded_tokens + cost[a + 1:]
        cut[a] = a + 1 + int(np.argmin(total))
        cost[a] = total[cut[a] - a - 1]
    batches, a = [], 0
    while a < len(starts):
        first, stop = bounds[a], bounds[cut[a]]
        full = full_rows(int(padded[first]), max_batch_tokens, max_batch_size)
        batches += [order[i:min(i + full, stop)] for i in range(first, stop, full)]
        a = cut[a]
    return batches


def full_rows(width: int, max_batch_tokens: int, max_batch_size: int) -> int:
    """Rows of a full batch at ``width``: as many as the budget holds, at least one."""
    return max(1, min(max_batch_size, max_batch_tokens // max(width, 1)))


def padded_rows(rows, full: int, widths: Sequence[int] | None):
    """Rows a batch of ``rows`` is padded to: with bucket widths on, a power of two up to a
    full batch, so a short batch does not make a new shape (fp16 pays 40-115 ms the first
    time it meets one); else ``rows``. Never fewer than ``rows``."""
    if not widths:
        return rows
    return np.maximum(rows, np.minimum(full, 2 ** np.ceil(np.log2(rows)).astype(np.int64)))


def window_spans(n: int, largest: int = WINDOW, first: int = FIRST_WINDOW) -> list[tuple[int, int]]:
    """(start, stop) of each window of ``n`` texts: doubling from ``first`` up to
    ``largest``, then halving towards the end. The GPU's first run waits for the first
    window alone, and what runs after the last window is tokenised (nothing overlaps it)
    is small; a whole first window of long texts kept an H200 idle 14 % of a call."""
    if first < 1 or largest < 1:
        raise InvalidInput(f"windows must hold at least one text, not first={first!r}, largest={largest!r}")
    first = min(first, largest)
    spans, size, start = [], first, 0
    while start < n:
        left = n - start
        take = min(size, max(first, -(-left // 2)))
        if left - take < first:
            take = left
        spans.append((start, start + take))
        start, size = start + take, min(size * 2, largest)
    return spans


def text_windows(texts: Iterable[str], largest: int = WINDOW, first: int = FIRST_WINDOW) -> Iterator[list[str]]:
    """Windows of checked texts from an iterable of unknown length: doubling from ``first``
    up to ``largest`` (``window_spans`` without the end, which is not known)."""
    texts, size, start = iter(texts), max(1, min(first, largest)), 0
    while part := list(islice(texts, size)):
        yield text_list(part, start=start)
        start, size = start + len(part), min(size * 2, largest)


def bucket_widths(max_length: int) -> tuple[int, ...]:
    return tuple(w for w in WIDTH_LADDER if w < max_length) + (max_length,)


def bucket(width: int, widths: Sequence[int] | None) -> int:
    """The smallest bucket width that holds ``width`` (``width`` itself without buckets)."""
    return int(bucketed(np.array([width]), widths)[0])


def bucketed(lengths: np.ndarray, widths: Sequence[int] | None) -> np.ndarray:
    """``bucket`` of each of ``lengths``."""
    if not widths:
        return lengths
    ladder = np.asarray(widths)
    at = np.searchsorted(ladder, lengths)
    return np.where(at < len(ladder), ladder[np.minimum(at, len(ladder) - 1)], lengths)


def background(items: Iterator, depth: int = 2) -> Iterator:
    """Yield ``items`` computed on a worker thread, at most ``depth`` ahead. ONNX Runtime,
    tokenizers and most numpy calls release the GIL, so the stages really overlap. An
    exception in the worker is raised here; stopping early stops the worker."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((end, exc))

    worker = threading.Thread(target=work, name="semsearch-embed", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()
