"""Text of Jupyter notebooks (.ipynb), nbformat 4 and 3, with the standard library's json.

A notebook is one document: its cells' sources in order, a blank line between them;
markdown and raw cells as written, code cells fenced in Markdown with the kernel's
language (```python), so a hit shows code as code. Outputs are never read: they are
what the code printed or drew (tables of numbers, logs, progress bars, tracebacks,
base64 images), machine-written, often most of the file, and rewritten by every run of
the notebook. Without them the content hash is of what is read (the cells, the
metadata), not of the file's bytes, so running a notebook again and saving it embeds
nothing new.

A notebook is parsed whole (json.loads), at most MAX_NOTEBOOK bytes of it: each output
is dropped as soon as the parser has read it (an object hook), so what stays in memory
besides the file's text is one output at a time, not all of them.
"""
from __future__ import annotations

import hashlib
import json
import re

from .loaders import Document, Skipped, canonical_json, decode_text, split_text, titled

MAX_NOTEBOOK = 256 << 20  # bytes: a notebook with 200 MB of plots reads; past this it is skipped
TOO_BIG = f"too large: over {MAX_NOTEBOOK >> 20} MiB (a notebook of outputs? clear them)"
NOT_NOTEBOOK = "not a Jupyter notebook (no cells)"
EMPTY = "empty notebook"
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.M)


def load_notebook(path: str) -> Document | Skipped:
    """The Document of a .ipynb file, or why it is skipped (one line)."""
    with open(path, "rb") as f:
        data = f.read(MAX_NOTEBOOK + 1)
    if len(data) > MAX_NOTEBOOK:
        return Skipped(path, TOO_BIG)
    if not data.strip():
        return Skipped(path, "empty file")
    text, replaced = decode_text(data)
    del data
    try:
        nb = json.loads(text, object_hook=_without_outputs)
    except RecursionError:
        return Skipped(path, "invalid JSON: nested too deeply")
    except ValueError as e:  # JSONDecodeError; transient: a notebook caught half-saved
        return Skipped(path, f"invalid JSON: {e}", transient=True)
    del text
    cells = _cells(nb)
    if cells is None:
        return Skipped(path, NOT_NOTEBOOK)
    language = _language(nb)
    title, parts = "", []
    for cell in cells:
        kind, source = cell.get("cell_type"), _source(cell)
        if not source.strip():
            continue
        if kind == "heading":  # nbformat 3: a heading is a cell of its own
            source = "#" * min(max(_int(cell.get("level"), 1), 1), 6) + " " + source.strip()
            kind = "markdown"
        if kind == "markdown" and not title and (match := _HEADING.search(source)):
            title = match.group(2)
        if kind == "code":
            parts.append(f"```{language}\n" + source.strip("\n") + "\n```")
        elif kind in ("markdown", "raw"):
            parts.append(source.strip())
    meta = {"type": "ipynb", **({"language": language} if language else {}), "cells": len(cells)}
    body = titled(meta, title, "\n\n".join(parts))
    if not body:
        return Skipped(path, EMPTY)
    digest = hashlib.sha256(canonical_json({"text": body, "metadata": meta})).hexdigest()
    return Document(path, path, {"path": path, **meta}, digest, lambda: split_text(body), replaced)


def _without_outputs(obj: dict):
    """The parser's hook for every JSON object: an output (it has an output_type) is
    dropped as soon as it is read, and so are images pasted into a markdown cell."""
    if "output_type" in obj:
        return None
    if "cell_type" in obj:
        obj.pop("attachments", None)
    return obj


def _cells(nb) -> list[dict] | None:
    """The cells of nbformat 4 (``cells``) or 3 (those of ``worksheets``); None for JSON
    that is no notebook."""
    if not isinstance(nb, dict):
        return None
    if isinstance(nb.get("cells"), list):
        cells = nb["cells"]
    elif isinstance(nb.get("worksheets"), list):
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict) and isinstance(ws.get("cells"), list)
                 for c in ws["cells"]]
    else:
        return None
    return [c for c in cells if isinstance(c, dict)]


def _source(cell: dict) -> str:
    """A cell's text: ``source`` (``input`` for a code cell of nbformat 3), a string or a
    list of lines as Jupyter writes it."""
    source = cell.get("source", cell.get("input", ""))
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def _language(nb: dict) -> str:
    """The kernel's language, lower case: kernelspec's, else language_info's (nbformat 4),
    else the notebook's or a code cell's (3); "" where none says."""
    meta = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    kernel, info = meta.get("kernelspec"), meta.get("language_info")
    candidates = [kernel.get("language") if isinstance(kernel, dict) else None,
                  info.get("name") if isinstance(info, dict) else None, meta.get("language")]
    candidates += [c.get("language") for c in _cells(nb) or [] if c.get("cell_type") == "code"][:1]
    return next((" ".join(c.split()).lower() for c in candidates if isinstance(c, str) and c.strip()), "")


def _int(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
