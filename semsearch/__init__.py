"""semsearch: embeddings and semantic search over your own documents.

``import semsearch`` stays light: the heavy parts load on first use. Top-level names are
verbs and classes; no submodule shares a name with one of them, so importing a submodule
never replaces a function here.
"""
__version__ = "0.1.0"

__all__ = ["Embedder", "Collection", "evaluate", "export_model", "SemsearchError"]

_LAZY = {
    "Embedder": ("embedder", "Embedder"),
    "Collection": ("collection", "Collection"),
    "evaluate": ("evaluation", "evaluate"),
    "export_model": ("export", "export"),
    "SemsearchError": ("errors", "SemsearchError"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'semsearch' has no attribute {name!r}")
    from importlib import import_module

    module, attr = _LAZY[name]
    return getattr(import_module(f".{module}", __name__), attr)
