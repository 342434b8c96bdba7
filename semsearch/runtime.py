"""How an exported graph is run: ONNX Runtime sessions and the padded arrays they take.

One home for provider choice, session options (TF32 off for exact fp32 on CUDA), IO binding,
tokenisation into flat token arrays and padding them into a batch. ``Embedder`` decides what
goes into a batch; ``export`` validates a fresh export through this same path.
"""
from __future__ import annotations

import base64
import ctypes
import functools
import itertools
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import InvalidInput, ModelError

log = logging.getLogger("semsearch")

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'semsearch[gpu]'"

# y = x + x on a float vector: the smallest graph that shows whether CUDA attaches and runs
# (made with onnx.helper: one Add node, opset 13, IR version 8), so `doctor` needs no model.
_PROBE_GRAPH = base64.b64decode(
    "CAg6NQoOCgF4CgF4EgF5IgNBZGQSBXByb2JlWg0KAXgSCAoGCAESAgoAYg0KAXkSCAoGCAESAgoAQgQKABAN")


# -- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tokens:
    """Tokenised texts as flat arrays (no Python object per token), padded only when run.

    ``ids`` holds every row's token ids one row after another; ``types`` likewise, or None
    when every token type id is 0 (single-sequence BERT inputs). ``cut`` marks rows that
    were truncated at the model's max length.
    """

    ids: np.ndarray
    lengths: np.ndarray
    cut: np.ndarray
    types: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def truncated(self) -> int:
        return int(self.cut.sum())

    def select(self, rows) -> "Tokens":
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))[rows]
        # flat position of every selected token: its row's start + its offset in the row
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat = np.repeat(starts, lengths) + offsets
        return Tokens(self.ids[flat], lengths, self.cut[rows],
                      None if self.types is None else self.types[flat])

    @staticmethod
    def concat(parts: list["Tokens"]) -> "Tokens":
        types = None
        if any(p.types is not None for p in parts):
            types = np.concatenate([np.zeros_like(p.ids) if p.types is None else p.types for p in parts])
        return Tokens(np.concatenate([p.ids for p in parts]), np.concatenate([p.lengths for p in parts]),
                      np.concatenate([p.cut for p in parts]), types)

    def arrays(self, width: int | None = None, rows: int | None = None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` padded to ``width``
        columns (at least the longest row) and ``rows`` rows (extra rows are a lone pad
        token, so a fixed batch shape never divides by an empty mask)."""
        n = len(self)
        width = max(width or 0, int(self.lengths.max()) if n else 1)
        rows = max(rows or 0, n)
        mask = np.zeros((rows, width), dtype=bool)
        mask[:n] = np.arange(width) < self.lengths[:, None]
        ids = np.zeros((rows, width), dtype=np.int64)
        ids[:n][mask[:n]] = self.ids  # row-major boolean assignment fills row after row
        types = np.zeros_like(ids)
        if self.types is not None:
            types[:n][mask[:n]] = self.types
        mask[n:, 0] = True
        return {"input_ids": ids, "attention_mask": mask.astype(np.int64), "token_type_ids": types}


def load_tokenizer(folder: Path, max_length: int):
    """The model's ``tokenizer.json`` truncating at ``max_length`` and never padding.

    tokenizer.json may ship fixed padding/truncation (128 for the default model); we use the
    model's real max length and pad per batch ourselves.
    """
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:
        raise ModelError(f"{folder / 'tokenizer.json'} is unreadable ({exc}); re-export the model") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def single_types_are_zero(tokenizer) -> bool:
    """Does one text always get token type 0? Then type ids need not be gathered."""
    post = json.loads(tokenizer.to_str()).get("post_processor") or {"type": "BertProcessing"}
    if post.get("type") in ("BertProcessing", "RobertaProcessing", "ByteLevel"):
        return True
    if post.get("type") == "TemplateProcessing":
        return all(next(iter(item.values())).get("type_id", 0) == 0 for item in post.get("single", []))
    return False


def encode(tokenizer, texts: list[str], types: bool = True) -> Tokens:
    """Tokenise ``texts`` (in parallel, in Rust) into flat arrays.

    ``encode_batch_fast`` (tokenizers >= 0.21) skips character offsets we never use.
    """
    batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = batch(texts)
    n = len(encodings)
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=n)
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
    cut = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=n)
    type_ids = None
    if types:
        type_ids = np.fromiter(itertools.chain.from_iterable(e.type_ids for e in encodings),
                               dtype=np.int64, count=total)
    return Tokens(ids, lengths, cut, type_ids)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tokenizer_processes(cores: int) -> tuple[int, int]:
    """(worker processes, tokeniser threads in each) for the GPU pipeline: a process per 4
    cores, two cores left to the process that feeds the GPU; none below 8 cores, where the
    pipeline's threads have no cores to spare for them."""
    if cores < 8:
        return 0, 1
    processes = cores // 4
    return processes, max(1, (cores - 2) // processes)


class TokenizerProcesses:
    """Tokenising in worker processes, for the GPU pipeline.

    Half of tokenising holds the GIL: building a Python ``Encoding`` per text, reading its
    ids and freeing it (3 µs a short text, 11 µs a long one, measured here), against a
    parallel half the tokeniser spreads over the cores. In the process that feeds the GPU
    that half is serial, and the thread that starts each model run waits for the GIL
    behind it (up to Python's 5 ms switch interval, as long as a fast fp16 run). Worker
    processes do both halves and send back flat arrays. They are plain ``python -c``
    children that read requests on stdin, so nothing of the caller's ``__main__`` runs in
    them, and they exit when their stdin closes, also when this process is killed.

    Each window is cut into contiguous pieces, one per worker (none under ``MIN_PIECE``
    texts), so the first window, which the GPU waits for, is tokenised on every worker's
    cores, not one worker's. As soon as a window's pieces are back, the next window's are
    sent, so the workers tokenise it while the caller uses this one. A worker never has
    more than one request whose reply is unread: with two, large replies could fill both
    pipes and deadlock.

    One call uses the workers at a time; a call that finds them busy tokenises in this
    process. If a worker dies, the windows due and all later ones are tokenised here, with
    a warning. Windows come back in order.
    """

    MIN_PIECE = 64  # texts: a smaller piece costs more in its round trip than it saves

    def __init__(self, tokenizer, types: bool, processes: int, threads: int = 4):
        self.tokenizer, self.types = tokenizer, types
        self.processes, self.threads = processes, threads
        self._workers: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def map(self, windows: Iterable[list[str]], workers: bool = True) -> Iterator[Tokens]:
        """``Tokens`` of each window of texts, in order; ``workers=False`` tokenises in this
        process (a call too small to be worth a round trip)."""
        windows = iter(windows)
        if not (workers and self.processes) or not self._lock.acquire(blocking=False):
            yield from self._here(windows)
            return
        try:
            yield from self._map(windows)
        finally:
            self._lock.release()

    def _here(self, windows: Iterable[list[str]]) -> Iterator[Tokens]:
        return (encode(self.tokenizer, texts, self.types) for texts in windows)

    def _map(self, windows: Iterator[list[str]]) -> Iterator[Tokens]:
        due: deque = deque()  # windows sent or received, not yet yielded (at most two)
        pending: list = []  # the workers whose replies are unread, in the order of the pieces
        try:
            self._start()
            self._send_window(next(windows, None), due, pending)
            while due:
                parts = [_receive(worker) for worker in pending]
                pending.clear()
                self._send_window(next(windows, None), due, pending)  # look-ahead: one window
                due.popleft()
                yield parts[0] if len(parts) == 1 else Tokens.concat(parts)
        except _WorkerFailed as exc:
            log.warning("a tokenizer process failed (%s; exit codes %s); tokenising in this process "
                        "from now on", exc, [w.poll() for w in self._workers])
            self.close()
            self.processes = 0
            pending.clear()
            retry = list(due)
            due.clear()
            yield from self._here(retry)
            yield from self._here(windows)
        finally:  # the consumer stopped early: read what is still due, so the next call starts clean
            try:
                for worker in pending:
                    _receive(worker)
            except _WorkerFailed:
                self.close()

    def _send_window(self, texts: list[str] | None, due: deque, pending: list) -> None:
        """Send ``texts`` in contiguous, nearly equal pieces, one per worker."""
        if texts is None:
            return
        due.append(texts)
        n = max(1, min(len(self._workers), len(texts) // self.MIN_PIECE))
        bounds = [len(texts) * i // n for i in range(n + 1)]
        for worker, start, stop in zip(self._workers, bounds, bounds[1:]):
            pending.append(worker)
            _send(worker, texts[start:stop])

    def _start(self) -> None:
        # A forked child polls its parent's workers as exited (they are not its children),
        # so it starts its own and never writes into the parent's pipes.
        if len(self._workers) == self.processes and all(w.poll() is None for w in self._workers):
            return
        self.close()
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "RAYON_NUM_THREADS": str(self.threads),
               "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
        command = [sys.executable, "-c", "from semsearch.runtime import tokenizer_process; tokenizer_process()"]
        try:
            self._workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                             for _ in range(self.processes)]
        except OSError as exc:
            raise _WorkerFailed(exc) from None
        setup = (self.tokenizer.to_str(), self.types)
        for worker in self._workers:  # after every start, so they boot side by side
            _send(worker, setup)

    def close(self) -> None:
        """End the workers (they also end by themselves when this process exits)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            for pipe in (worker.stdin, worker.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit; the workers end when their stdin closes anyway
            pass


class _WorkerFailed(Exception):
    """A tokenizer process could not be started, written to or read from."""


def _send(worker: subprocess.Popen, message) -> None:
    try:
        pickle.dump(message, worker.stdin, pickle.HIGHEST_PROTOCOL)
        worker.stdin.flush()
    except (OSError, ValueError) as exc:  # ValueError: the pipe was closed
        raise _WorkerFailed(exc.__class__.__name__) from None


def _receive(worker: subprocess.Popen) -> Tokens:
    try:
        return pickle.load(worker.stdout)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise _WorkerFailed(exc.__class__.__name__) from None


def tokenizer_process() -> None:
    """A TokenizerProcesses worker: a tokenizer and a types flag, then windows of texts
    on stdin; their Tokens on stdout, until stdin closes. Ctrl-C is the caller's to handle."""
    import signal

    from tokenizers import Tokenizer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the replies
    try:
        spec, types = pickle.load(requests)
        tokenizer = Tokenizer.from_str(spec)
        while True:
            pickle.dump(encode(tokenizer, pickle.load(requests), types), replies, pickle.HIGHEST_PROTOCOL)
            replies.flush()
    except (EOFError, BrokenPipeError):  # the caller closed the pipes or exited
        return
    except Exception as exc:  # the caller sees the pipe close and tokenises in its own process
        print(f"semsearch tokenizer process: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


# -- sessions -----------------------------------------------------------------------------------
def onnxruntime():
    """The onnxruntime module, or a ModelError saying which extra installs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("ONNX Runtime is not installed: pip install 'semsearch[cpu]' "
                         "(or 'semsearch[gpu]' on an NVIDIA GPU)") from None
    return ort


def available_providers() -> list[str]:
    return onnxruntime().get_available_providers()


def providers_for(device: str, variant: str = "fp32") -> list:
    """Execution providers for ``device``. On CUDA, TF32 is off except for fp16: ONNX
    Runtime's default (use_tf32=1) put fp32 2e-4 away from PyTorch; fp32 must mean fp32."""
    if device not in DEVICES:
        raise InvalidInput(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return [CPU]
    why = cuda_unusable()
    if why is None:
        _preload_cuda_libraries()
        return [(CUDA, {} if variant == "fp16" else {"use_tf32": "0"}), CPU]
    if device == "cuda":
        raise ModelError(f"device='cuda' but {why} (`semsearch doctor` shows what is installed)")
    return [CPU]


@functools.cache
def cuda_unusable() -> str | None:
    """Why CUDA cannot be tried here, or None. Without the NVIDIA driver, onnxruntime-gpu's
    CUDA provider fails on every session (in red on stderr) and falls back to the CPU, so
    ``auto`` picks the CPU without trying: a GPU build on a machine with no GPU is quiet."""
    if CUDA not in available_providers():
        return f"this ONNX Runtime has no CUDA provider ({GPU_INSTALL})"
    driver = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(driver)
    except OSError:
        return f"no NVIDIA driver was found ({driver} does not load: no GPU here, or no driver installed)"
    return None


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (onnxruntime-gpu[cuda,cudnn]) when
    they are installed; a system CUDA is found by the loader without this."""
    import importlib.util

    ort = onnxruntime()
    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        try:
            ort.preload_dlls(directory="")
        except Exception as exc:  # the provider then reports what is missing when it loads
            log.debug("preload_dlls: %s", exc)


class Session:
    """One ONNX Runtime session of one graph. ``run`` is safe to call from many threads."""

    def __init__(self, path: Path | bytes, device: str = "auto", variant: str = "fp32",
                 threads: int | None = None, output: str = "sentence_embedding"):
        ort = onnxruntime()
        options = ort.SessionOptions()
        providers = providers_for(device, variant)
        if threads is None and providers[0] != CPU:
            # On the GPU only shape arithmetic runs on the CPU: one thread, so no spinning
            # thread pool competes with the tokeniser for the cores.
            threads = 1
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        name = path if isinstance(path, Path) else "the probe graph"
        try:
            self._session = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                                 options, providers=providers)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load {name} ({str(exc).splitlines()[0]}); "
                             "re-export with `semsearch export --force`") from None
        self.providers: list[str] = self._session.get_providers()
        self.on_gpu = self.providers[0] == CUDA
        self.output = output
        self.input_names = {i.name for i in self._session.get_inputs()}
        if device == "cuda" and not self.on_gpu:
            raise ModelError("device='cuda' was asked for but the CUDA provider did not attach "
                             f"(ONNX Runtime runs on {self.providers[0]}); `semsearch doctor` says why")
        if device == "auto" and cuda_unusable() is None and not self.on_gpu:
            log.warning("CUDA is installed but did not attach; embedding on %s", self.providers[0])
        if variant == "fp16" and not self.on_gpu:
            raise ModelError("the fp16 variant is for GPUs; on the CPU use fp32 or int8")

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One model run; on a GPU through IO binding, so only the pooled output comes back."""
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if not self.on_gpu:
            return self._session.run([self.output], feeds)[0]
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.output, "cuda")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)


# -- doctor -------------------------------------------------------------------------------------
def describe() -> dict:
    """What is installed and what attaches: the facts behind `semsearch doctor`."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    dists = ("onnxruntime", "onnxruntime-gpu", "tokenizers", "numpy", "faiss-cpu", "faiss-gpu-cu12",
             "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "torch")
    report: dict = {"python": sys.version.split()[0], "cores": cpu_cores(),
                    "packages": {d: v for d in dists if (v := installed(d))}, "problems": []}
    problems = report["problems"]
    if installed("onnxruntime") and installed("onnxruntime-gpu"):
        problems.append("onnxruntime and onnxruntime-gpu are both installed and share one module, "
                        f"so one shadows the other: {GPU_INSTALL}")
    try:
        ort = onnxruntime()
    except ModelError as exc:
        problems.append(exc.one_line())
        return report
    report["onnxruntime"] = {"version": ort.__version__, "module": str(Path(ort.__file__).parent),
                             "device": ort.get_device(), "available_providers": available_providers()}
    report["cuda"] = _try_cuda()
    if installed("onnxruntime-gpu") and CUDA not in available_providers():
        problems.append(f"onnxruntime-gpu is installed but its CUDA provider is missing: {GPU_INSTALL}")
    return report


def _try_cuda() -> dict:
    """Does the CUDA provider attach and run a graph? (It falls back to the CPU silently
    when CUDA or cuDNN libraries are missing, so only a real session tells; the reason is
    on ONNX Runtime's own stderr, which is read here instead of printed.)"""
    why = cuda_unusable()
    if why is not None:
        return {"attached": False, "why": why}
    with tempfile.TemporaryFile() as err, fd_redirected(2, err.fileno()):
        try:
            session = Session(_PROBE_GRAPH, device="cuda", output="y")
            got = session.run({"x": np.arange(4, dtype=np.float32)})
        except ModelError as exc:
            err.seek(0)
            return {"attached": False, "why": cuda_failure(err.read().decode(errors="replace")) or exc.one_line()}
    return {"attached": True, "providers": session.providers,
            "ran": bool(np.array_equal(got, np.arange(4, dtype=np.float32) * 2))}


@contextmanager
def fd_redirected(fd: int, to: int):
    """What C code writes on ``fd`` (1, 2) goes to ``to`` for the length of the block:
    ONNX Runtime and faiss print from C++, past Python's sys.stdout/sys.stderr. C's
    buffers are flushed before ``fd`` is restored, so nothing written here leaks out later."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        os.dup2(to, fd)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, fd)
        os.close(saved)


def cuda_failure(log_text: str) -> str | None:
    """ONNX Runtime's reason the CUDA provider did not load (a missing library, mostly),
    from its log, in one line; None when the log does not say."""
    log_text = re.sub(r"\x1b\[[0-9;]*m", "", log_text)  # its colours
    missing = re.search(r"with error: ([^\n]+?)\s*$", log_text, re.M)
    needs = re.search(r"Require (cuDNN \S+ and CUDA \S+?)\.?\s", log_text)
    if not missing:
        return None
    return f"the CUDA provider did not load ({missing.group(1)})" + (f"; it needs {needs.group(1)}" if needs else "")


def doctor_lines(report: dict, models: list[dict]) -> list[str]:
    """``describe()`` and the cached models' validation state, as `semsearch doctor` prints them."""
    from .models import variant_state

    lines = [f"python {report['python']}; " + ", ".join(f"{k} {v}" for k, v in report["packages"].items())]
    processes, threads = tokenizer_processes(report["cores"])
    lines.append(f"{report['cores']} CPU cores: on a GPU, tokenising runs " + (
        f"in {processes} worker processes x {threads} threads" if processes else "in the feeding process (workers from 8 cores)"))
    if "onnxruntime" in report:
        ort = report["onnxruntime"]
        lines.append(f"onnxruntime {ort['version']} ({ort['device']} build) in {ort['module']}; "
                     f"providers: {', '.join(ort['available_providers'])}")
        cuda = report["cuda"]
        lines.append("CUDA: attached and ran a graph" if cuda["attached"] and cuda.get("ran")
                     else f"CUDA: not attached: {cuda.get('why', 'it attached but the probe graph gave a wrong result')}")
    for m in models:
        states = "; ".join(f"{name}: {variant_state(info)}" for name, info in m["variants"].items())
        lines.append(f"model {m['name']} in {m['folder']}: {states}")
    lines += [f"problem: {p}" for p in report["problems"]]
    return lines
