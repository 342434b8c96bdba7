"""semsearch: embeddings and semantic search over your own documents.

``import semsearch`` stays light: the heavy parts load on first use. Top-level names are
verbs and classes; no submodule shares a name with one of them, so importing a submodule
never replaces a function here.
"""
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Embedder", "Collection", "Hit", "StoredDocument", "evaluate", "export_model", "SemsearchError"]

_LAZY = {
    "Embedder": ("embedder", "Embedder"),
    "Collection": ("collection", "Collection"),
    "Hit": ("search", "Hit"),
    "StoredDocument": ("collection", "StoredDocument"),
    "evaluate": ("evaluation", "evaluate"),
    "export_model": ("export", "export"),
    "SemsearchError": ("errors", "SemsearchError"),
}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads them
    from .collection import Collection, StoredDocument
    from .embedder import Embedder
    from .errors import SemsearchError
    from .evaluation import evaluate
    from .export import export as export_model
    from .search import Hit


def __getattr__(name):
    from importlib import import_module

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    if not name.startswith("_"):  # a submodule nothing imported yet: semsearch.errors.NotFound
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'semsearch' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
