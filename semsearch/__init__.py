"""semsearch: embeddings and semantic search over your own documents.

``import semsearch`` stays light: the heavy parts load on first use.
"""
__version__ = "0.1.0"

__all__ = ["Embedder", "Collection", "evaluate", "export", "SemsearchError"]


def __getattr__(name):
    if name == "Embedder":
        from .embedder import Embedder
        return Embedder
    if name == "Collection":
        from .collection import Collection
        return Collection
    if name == "evaluate":
        from .evaluate import evaluate
        return evaluate
    if name == "export":
        from .export import export
        return export
    if name == "SemsearchError":
        from .errors import SemsearchError
        return SemsearchError
    raise AttributeError(f"module 'semsearch' has no attribute {name!r}")
