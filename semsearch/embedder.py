"""Embedder: text -> L2-normalised float32 vectors with ONNX Runtime.

Texts are tokenised once, sorted by token length and batched so each batch pads only to
its own longest text; results come back in input order. Pooling and normalisation are
inside the exported graph (see export.py), so a run returns ``(batch, dim)`` directly.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ModelError
from .models import exported_folder, read_manifest, sha256_file

log = logging.getLogger("semsearch")

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class Embedder:
    """An exported model loaded into an ONNX Runtime session."""

    def __init__(self, folder: Path, manifest: dict, variant: str, session, tokenizer):
        self.folder = folder
        self.manifest = manifest
        self.variant = variant
        self.session = session
        self.tokenizer = tokenizer
        self.dim: int = manifest["dim"]
        self.max_length: int = manifest["max_length"]
        self.truncated = 0  # texts cut at max_length so far, for callers to report
        self.providers: list[str] = session.get_providers()
        self._input_names = {i.name for i in session.get_inputs()}

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, variant: str = "fp32",
             device: str = "auto", threads: int | None = None) -> "Embedder":
        """Load ``model`` (default model, local HF folder, exported folder or hub id).

        A model that has not been exported yet is exported once into the cache, which
        needs the ``export`` extra (torch, optimum).
        """
        folder = exported_folder(model)
        if not (folder / "manifest.json").is_file():
            try:
                from .export import export
                folder = export(model, out=folder)
            except ModelError as exc:
                raise ModelError(f"model {model or 'default'} is not exported yet and {exc}") from None
        return cls.from_folder(folder, variant, device=device, threads=threads)

    @classmethod
    def from_folder(cls, folder: str | Path, variant: str = "fp32", device: str = "auto",
                    threads: int | None = None, manifest: dict | None = None,
                    verify: bool = True) -> "Embedder":
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        manifest = manifest or read_manifest(folder)
        if device not in DEVICES:
            raise ModelError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        info = manifest.get("variants", {}).get(variant)
        if info is None:
            have = ", ".join(manifest.get("variants", {})) or "none"
            raise ModelError(
                f"{folder.name} has no {variant} variant (it has: {have}); "
                f"re-export with `semsearch export` (add --fp16 for fp16)")
        onnx_path = folder / info["file"]
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path} is missing; re-export with `semsearch export --force`")
        if verify and not verified(onnx_path, info["sha256"]):
            raise ModelError(
                f"{onnx_path} does not match its manifest (corrupt or replaced); "
                f"re-export with `semsearch export --force`")
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:
            raise ModelError(f"{folder / 'tokenizer.json'} is unreadable ({exc}); re-export the model") from None
        # tokenizer.json may ship fixed padding/truncation (128 for the default model);
        # use the model's real max length and pad per batch ourselves.
        tokenizer.no_padding()
        tokenizer.enable_truncation(manifest["max_length"])

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=choose_providers(device))
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime cannot load {onnx_path} ({str(exc).splitlines()[0]}); "
                f"re-export with `semsearch export --force`") from None
        active = session.get_providers()[0]
        if device == "cuda" and active != CUDA:
            raise ModelError("device='cuda' was asked for but the CUDA provider did not attach "
                             f"(ONNX Runtime runs on {active}); install semsearch[gpu] and check CUDA")
        if device == "auto" and CUDA in ort.get_available_providers() and active != CUDA:
            log.warning("CUDA is installed but did not attach; embedding on %s", active)
        if variant == "fp16" and active != CUDA:
            raise ModelError("the fp16 variant is for GPUs; on the CPU use fp32 or int8")
        return cls(folder, manifest, variant, session, tokenizer)

    def embed(self, texts: Sequence[str] | str, batch_size: int = 32, kind: str | None = None,
              progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns ``(len(texts), dim)`` float32 rows in input order.

        ``kind`` ("query" or "passage") adds the model's prompt prefix, if it has one.
        """
        texts = text_list(texts)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if kind not in (None, "query", "passage"):
            raise ValueError(f"kind must be 'query', 'passage' or None, not {kind!r}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        prefix = self.manifest.get("prompts", {}).get(kind, "") if kind else ""
        encodings = self.tokenizer.encode_batch([prefix + t for t in texts])
        self.truncated += sum(1 for e in encodings if e.overflowing)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for rows in progress_bar(batches, progress, total_items=len(texts)):
            out[rows] = self._run([encodings[r] for r in rows])
        return out

    def _run(self, encodings) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        if self.providers[0] == CUDA:
            return self._run_on_gpu(feeds)
        return self.session.run([self.manifest["output"]], feeds)[0]

    def _run_on_gpu(self, feeds: dict) -> np.ndarray:
        """IO binding: inputs go to the device once, only the pooled output comes back."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.manifest["output"], "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)


def text_list(texts: Sequence[str] | str) -> list[str]:
    """A list of str from one str or a sequence; anything else is a TypeError naming it."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return texts


def verified(path: Path, sha256: str) -> bool:
    """Does ``path`` hash to ``sha256``? Hashing 90 MB costs ~0.3 s of every cold start, so
    a match is remembered against the file's size and mtime, and redone when they change."""
    stamp = path.with_name(path.name + ".verified")
    stat = path.stat()
    mark = f"{stat.st_size} {stat.st_mtime_ns} {sha256}"
    try:
        if stamp.read_text() == mark:
            return True
    except OSError:
        pass
    if sha256_file(path) != sha256:
        return False
    try:
        stamp.write_text(mark)
    except OSError:
        pass  # a read-only model folder: verify every time
    return True


def choose_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return [CPU]
    if CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelError("device='cuda' but this ONNX Runtime has no CUDA provider "
                         "(pip uninstall onnxruntime && pip install 'semsearch[gpu]')")
    return [CPU]


def progress_bar(items: list, enabled: bool, total_items: int):
    """tqdm over batches, counting texts; silent unless asked for and on a terminal."""
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return _counting(tqdm(total=total_items, unit="text", disable=None, leave=False), items)


def _counting(bar, items: Iterable):
    with bar:
        for item in items:
            yield item
            bar.update(len(item))
