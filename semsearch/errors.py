"""The exceptions semsearch raises on purpose: the CLI prints them as one line."""


class SemsearchError(Exception):
    """A failure the user can act on; its message says how."""


class ModelError(SemsearchError):
    """A model is missing, corrupt, unexported or does not match an index."""


class CollectionError(SemsearchError):
    """A collection is missing, locked, or was asked for something it cannot do."""
