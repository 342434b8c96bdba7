"""Scale-out: Ray Data ingest (`index --ray`) and on-disk IVF indexes (`build`).

Ray, pyarrow and faiss's on-disk lists are imported by the functions that use them, so
importing this package (or semsearch) costs nothing; they need the `ray` extra."""


def index_files(*args, **kwargs):
    """collection.index_files with ingest on Ray; see pipeline.index_files."""
    from .pipeline import index_files as run
    return run(*args, **kwargs)


def index_paths(*args, **kwargs):
    """Collection.add_files with ingest on Ray; see pipeline.index_paths."""
    from .pipeline import index_paths as run
    return run(*args, **kwargs)
