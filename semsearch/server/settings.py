"""What a server is allowed to do: batching knobs, request limits, keys, where it listens.

Kept free of FastAPI so the CLI can validate a command line (and refuse an insecure one)
before anything heavy is imported or loaded.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import validation
from ..errors import InvalidInput

KEY_ENV = "SEMSEARCH_API_KEY"
FULL, READ = True, False  # what a key may do: everything, or only what writes nothing (app.py's reads)
SCOPES = {"read": READ, "full": FULL}  # the word after a key in --api-key-file (none: full)
MIN_KEY = 16  # characters
MAX_WAIT_MS = 10_000  # a wait for company longer than this is a mistake, and past ~1e12 threads cannot wait
TIMEOUTS = (0.1, 3_600)  # seconds a request's head or body may take to arrive: the range allowed


@dataclass(frozen=True)
class Settings:
    # micro-batching (see batcher.py)
    batching: bool = True
    max_batch_tokens: int | None = None  # padded tokens per model run (None: the Embedder's,
    max_batch_size: int | None = None    # texts per model run            measured per device)
    workers: int | None = None      # model runs side by side (None: one per core on a CPU)
    max_wait_ms: float = 2.0        # how long the first queued text waits for company
    max_queue: int = 8_192          # texts waiting or running; past it: 503 + Retry-After
    # request limits
    max_body_bytes: int = 8 * 2**20
    max_inputs: int = 2_048         # texts per embeddings request, documents per add
    max_chars: int = 100_000        # characters per embedded text (longer ones are truncated anyway)
    max_k: int = 1_000
    max_page: int = 1_000           # documents per page of GET .../documents (its limit=)
    header_timeout: float = 10.0    # seconds from a connection's open (or a request's first byte) to the end
                                    # of its headers; past it: closed (408 if part of them came)
    body_timeout: float = 30.0      # seconds from a request's headers to the end of its body; past it: 408
    max_connections: int = 512      # open connections (and requests in flight); past it: 503
    max_client_connections: int = 128  # open connections per client address (IPv6: per /64); past it: refused
                                    # (503 + close); 0: no cap (behind a proxy). A quarter of max_connections, and
                                    # above the pools of httpx and aiohttp (100); not scaled with max_connections:
                                    # a real client's pool does not shrink with the server's limit
    # bearer keys, each (key, may it write: FULL or READ); repr=False keeps them out of logs and tracebacks
    api_keys: tuple[tuple[bytes, bool], ...] = field(default=(), repr=False)

    def __post_init__(self):
        for name in ("max_batch_tokens", "max_batch_size", "workers", "max_queue", "max_body_bytes",
                     "max_inputs", "max_chars", "max_k", "max_page", "max_connections"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInput(f"{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:  # nan too; inf or 1e12 killed the batcher's threads
            raise InvalidInput(f"max-wait-ms must be from 0 to {MAX_WAIT_MS:,}")
        validation.finite(self.header_timeout, "header-timeout", *TIMEOUTS)
        validation.finite(self.body_timeout, "body-timeout", *TIMEOUTS)
        if self.max_client_connections < 0:
            raise InvalidInput("max-client-connections must be at least 0 (0: no cap)")
        if self.max_inputs > self.max_queue:
            raise InvalidInput("max-inputs must not exceed max-queue (one request must fit the queue)")


def read_keys(key_file: str | os.PathLike | None) -> tuple[tuple[bytes, bool], ...]:
    """(key, FULL or READ) from SEMSEARCH_API_KEY (a full key) and from a file: one key per
    line, ``KEY`` (full) or ``KEY read`` (may search and read, not write), blank lines and
    '#' comments, so a key can be rotated by listing the old and the new one for a while.
    A bad line is named by its number, never by its text: it may hold a key."""
    keys: dict[str, tuple[bool, str]] = {}  # key -> (scope, where it was given)

    def take(key: str, scope: bool, where: str) -> None:
        if len(key) < MIN_KEY:
            raise InvalidInput(f"{where}: an API key must be at least {MIN_KEY} characters, without spaces")
        if keys.get(key, (scope,))[0] != scope:
            raise InvalidInput(f"{where}: the same key as {keys[key][1]}, with another scope")
        keys.setdefault(key, (scope, where))

    env = os.environ.get(KEY_ENV, "")
    if env.strip():
        if len(env.split()) > 1:
            raise InvalidInput(f"{KEY_ENV}: an API key must be at least {MIN_KEY} characters, without spaces")
        take(env.strip(), FULL, KEY_ENV)
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read the API key file {key_file}: {exc.__class__.__name__}") from None
        given = 0
        for number, line in enumerate(lines, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            given += 1
            where = f"the API key file {key_file}, line {number}"
            if len(words) > 2 or (len(words) == 2 and words[1] not in SCOPES):
                raise InvalidInput(f"{where}: expected KEY or KEY read (a key without spaces; "
                                   f"scopes: {', '.join(SCOPES)}); the line is not shown, it may hold a key")
            take(words[0], SCOPES[words[1]] if len(words) == 2 else FULL, where)
        if not given:
            raise InvalidInput(f"the API key file {key_file} holds no key")
    return tuple((key.encode(), scope) for key, (scope, _) in keys.items())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, keys: tuple, insecure: bool) -> None:
    """Listening beyond this machine without a key serves anyone who can reach it."""
    if not is_loopback(host) and not keys and not insecure:
        raise InvalidInput(
            f"refusing to listen on {host} without an API key: set {KEY_ENV} or --api-key-file, "
            "or pass --insecure if every client that can reach it may use it")
