"""The one error taxonomy: every failure semsearch raises on purpose is a SemsearchError.

Each class knows how a front door reports it: ``exit_code`` for the CLI (one line on
stderr), ``http_status`` and ``error_type`` for the HTTP server (OpenAI's error shape).
Raise the most specific class; callers catch ``SemsearchError`` and never inspect text.
"""
from __future__ import annotations


class SemsearchError(Exception):
    """A failure the user can act on; its message says how."""

    exit_code = 1
    http_status = 500
    error_type = "server_error"

    def one_line(self) -> str:
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__


class InvalidInput(SemsearchError, ValueError):
    """An argument is malformed, out of range or of the wrong type (the caller's mistake)."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"


class WrongType(InvalidInput, TypeError):
    """An argument of the wrong type (also a TypeError, as Python callers expect)."""


class TooLarge(InvalidInput):
    """An input exceeds a size limit (k, text length, document size, request size)."""

    http_status = 413


class NotFound(SemsearchError):
    """A named thing (collection, document, file, model) does not exist."""

    exit_code = 3
    http_status = 404
    error_type = "not_found_error"


class Conflict(SemsearchError):
    """The request clashes with the current state: busy writer lock, existing collection,
    settings that differ from the collection's. Retrying later (or differently) helps."""

    exit_code = 75  # EX_TEMPFAIL
    http_status = 409
    error_type = "conflict_error"


class Overloaded(SemsearchError):
    """The server's queue is full: retry after a moment."""

    exit_code = 75
    http_status = 503
    error_type = "overloaded_error"


class ModelError(SemsearchError):
    """A model is missing, corrupt, unexported, or does not match an index."""


class ModelNotFound(ModelError, NotFound):
    """No such model folder, export or variant."""


class WrongModel(ModelError, Conflict):
    """A collection was built with another model than the one given: a setting that differs
    from the collection's, as a variant that differs is (exit 75, HTTP 409)."""


class CollectionError(SemsearchError):
    """A collection's files are unreadable or inconsistent in a way the user must fix."""


class NoSuchCollection(CollectionError, NotFound):
    """No collection by that name or path."""


class NoSuchDocument(NotFound):
    """No document by that id in the collection."""

    @classmethod
    def of(cls, collection: str, ids: list[str]) -> "NoSuchDocument":
        """The one wording, for one missing id or several (the first three named)."""
        shown = ", ".join(map(repr, ids[:3])) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        return cls(f"collection {collection} has no document{'s' if len(ids) > 1 else ''} {shown}")


class Damaged(CollectionError):
    """`semsearch check` found a collection's files damaged (a crash, a disk fault, files
    copied by hand), and --repair could not (or was not asked to) fix it: the files'
    fault, not the caller's input."""


class CollectionBusy(CollectionError, Conflict):
    """Another writer holds the collection's lock."""


class CollectionExists(CollectionError, Conflict):
    """A collection by that name exists (or exists with other settings)."""


class ReadOnly(CollectionError):
    """A write to a collection this process may only read (its folder is not writable):
    the caller's permissions, not a fault of the collection."""
    exit_code = 77  # EX_NOPERM
    http_status = 403
    error_type = "permission_error"


class OutOfSpace(SemsearchError):
    """The disk that holds a collection is full (or its quota is reached). A write is one
    transaction, so the failed one left nothing behind: freeing space and retrying helps."""
    exit_code = 74  # EX_IOERR
    http_status = 507  # Insufficient Storage
    error_type = "insufficient_storage"

    @classmethod
    def at(cls, folder, outcome: str) -> "OutOfSpace":
        """The one wording: which disk, what became of the work (``outcome``), what to do."""
        return cls(f"the disk that holds {folder} is full: {outcome}: free space there and retry")
