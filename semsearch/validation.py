"""Checks on everything a caller passes in, at the library boundary.

The CLI, the HTTP server and Python callers all reach the library through these, so a
mistake gets the same InvalidInput (or TooLarge) whichever door it came through, before
anything is read or written.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InvalidInput, TooLarge, WrongType

DEFAULT_K = 10                 # hits a search gives when asked for no number (every front door)
MAX_K = 10_000                 # hits per query: beyond this a ranking is an export, not a search
MAX_QUERIES = 10_000           # queries per search call
MAX_QUERY_CHARS = 20_000       # a query past a few pages is a document (lexical cost grows with its terms)
MAX_ID_CHARS = 1_000
MAX_DOCUMENT_CHARS = 10_000_000  # ~8 min of embedding here; larger documents must be split
MAX_METADATA_DEPTH = 20
MODES = ("dense", "lexical", "hybrid")
MAX_WEIGHT = 1e6               # fusion and feedback weights: beyond this the arithmetic overflows, to no use
MIN_WEIGHT = 1e-6              # a fusion weight other than 0: below it, the best fused score rounds to 0
MAX_NAME_BYTES = 255           # one folder name on the usual filesystems
MAX_WHERE_CONDITIONS = 100     # each is one more AND for SQLite, whose expression depth ends near 1,000
MAX_IN_VALUES = 1_000          # values of one $in/$nin (sent to SQLite as one JSON array, not one OR each)
# A where filter's operators (MongoDB's and Chroma's names); a plain value means $eq.
WHERE_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
RANGE_OPERATORS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# --where KEY<op>VALUE on a command line or in a URL: the operator each spelling means
COMPARISONS = {"=": "$eq", "==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
INT64 = (-2**63, 2**63 - 1)    # SQLite's integers: a larger one is stored as a float and never equals itself


def lone_surrogate(value) -> str | None:
    """The first lone surrogate (U+D800..U+DFFF alone: JSON's "\\ud800" and Python allow one,
    UTF-8 does not) in a string, or in a list's or dict's keys and values; else None.
    No tokenizer or database takes one."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return exc.object[exc.start]
    elif isinstance(value, (list, tuple, dict)):
        for item in (*value, *value.values()) if isinstance(value, dict) else value:
            if (found := lone_surrogate(item)) is not None:
                return found
    return None


def unicode(value, name: str):
    """``value`` unless it holds a lone surrogate (InvalidInput naming it)."""
    if (found := lone_surrogate(value)) is not None:
        raise InvalidInput(f"{name} holds a lone surrogate (U+{ord(found):04X}), which is not valid Unicode")
    return value


def positive_int(value, name: str, limit: int) -> int:
    """An int in 1..limit; bools, floats and strings are refused rather than coerced."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{name} must be a whole number, not {type(value).__name__} {value!r}")
    if value < 1:
        raise InvalidInput(f"{name} must be at least 1, got {value}")
    if value > limit:
        raise TooLarge(f"{name} must be at most {limit:,}, got {value:,}")
    return int(value)


def check_k(k) -> int:
    return positive_int(k, "k", MAX_K)


def flag(value, name: str) -> bool:
    """True or False (numpy's too); anything else refused: docs="no" was a truthy string,
    so it meant yes."""
    if not isinstance(value, (bool, np.bool_)):
        raise WrongType(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    return bool(value)


def finite(value, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (nan and inf are refused), optionally in minimum..maximum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInput(f"{name} must be at most {int(maximum) if float(maximum).is_integer() else maximum:,}, "
                           f"got {value:g}")
    return float(value)


def string(value, name: str) -> str:
    """A non-empty str (an index spec, a model name): anything else is WrongType / InvalidInput."""
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{name} is empty")
    return value


def choice(value, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def weights(value) -> tuple[float, float]:
    """Hybrid (dense, lexical) weights: two finite numbers, each 0 or MIN_WEIGHT..MAX_WEIGHT,
    not both 0 (the fused score is a share of the best possible, which both at 0, or
    both a denormal 5e-324, leaves a division by 0)."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidInput("weights must be two numbers: (dense, lexical)")
    value = tuple(value)
    if len(value) != 2:
        raise InvalidInput("weights must be two numbers: (dense, lexical)")
    dense, lexical = (finite(w, "weights", 0.0, MAX_WEIGHT) for w in value)
    if not dense and not lexical:
        raise InvalidInput("weights must not both be 0")
    if any(0 < w < MIN_WEIGHT for w in (dense, lexical)):
        raise InvalidInput(f"weights must each be 0 or at least {MIN_WEIGHT:g}, got {dense:g}, {lexical:g}")
    return dense, lexical


def collection_name(value) -> str:
    """A collection's name or path as text: a str or path, not blank, '.' or '..', no NUL,
    and a bare name no longer than a folder name may be."""
    if not isinstance(value, (str, os.PathLike)):
        raise WrongType(f"a collection name must be a string or a path, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or text in (".", "..") or "\0" in text:
        raise InvalidInput(f"invalid collection name {text!r}")
    if "/" not in text and os.sep not in text and len(os.fsencode(text)) > MAX_NAME_BYTES:
        raise InvalidInput(f"a collection name may be at most {MAX_NAME_BYTES} bytes, got {len(os.fsencode(text))}")
    return text


def path(value, name: str = "path") -> str:
    """A file or folder path given by the caller: a str or path, not blank (a blank path
    would resolve to the current folder)."""
    if not isinstance(value, (str, os.PathLike)):
        raise WrongType(f"{name} must be a string or a path, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise InvalidInput(f"{name} {text!r} is blank or not a usable path")
    return text


def user_path(text: str | os.PathLike) -> Path:
    """``~`` and ``~user`` expanded as a shell does, an unknown user's left as typed:
    pathlib's expanduser raises RuntimeError for it, a crash where "not found" is meant."""
    return Path(os.path.expanduser(os.fspath(text)))


def source_path(value, name: str = "path") -> str:
    """A file or folder as documents' sources name it: ~ expanded, absolute, links resolved.
    os.path's, not pathlib's: those raise RuntimeError for an unknown ~user and a symlink
    loop, which are paths no document came from. A name that is not UTF-8 (a lone
    surrogate) cannot be stored, so no document came from it either; SQLite refused it."""
    text = path(value, name)
    if lone_surrogate(text) is not None:
        try:
            shown = os.fsencode(text).decode("utf-8", "backslashreplace")  # its bytes, as loaders show them
        except UnicodeEncodeError:  # "\ud800" from JSON: no file name at all
            shown = text.encode("utf-8", "backslashreplace").decode()
        raise InvalidInput(f"{shown}: name is not valid UTF-8, so no indexed document comes from it "
                           "(rename it to index it)")
    return os.path.realpath(user_path(text))


def path_list(paths, name: str = "paths") -> list[str]:
    """Paths as a list of str: one path (a str or path) is one path, never its characters."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(paths, (bytes, dict)) or not isinstance(paths, Iterable):
        raise WrongType(f"{name} must be a path or a list of paths, not {type(paths).__name__}")
    return [path(p, f"{name}[{i}]") for i, p in enumerate(paths)]


def patterns(value, name: str) -> tuple[str, ...]:
    """File-name patterns (--glob, --exclude): None, one pattern, or a list of them, each a
    non-empty str ("" would select or exclude nothing anyone means)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise WrongType(f"{name} must be a pattern or a list of patterns, not {type(value).__name__}")
    value = list(value)
    return tuple(unicode(string(v, f"{name}[{i}]" if len(value) > 1 else name), name)
                 for i, v in enumerate(value))


def text_list(texts, name: str = "texts", start: int = 0) -> list[str]:
    """A list of str from one str or a sequence of str; anything else is InvalidInput.
    ``start``: the number of the first (a window of a longer stream), for the message."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
        raise WrongType(f"{name} must be a string or a list of strings, not {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise WrongType(f"{name}[{start + i}] is {type(text).__name__}, not str")
        if not text.isascii():
            unicode(text, f"{name}[{start + i}]")
    return texts


def queries(query) -> tuple[list[str], bool]:
    """(queries, whether one was given as a bare string); none may be blank."""
    items = text_list(query, "query")
    if not items:
        raise InvalidInput("the query is empty")
    blank = next((i for i, q in enumerate(items) if not q.strip()), None)
    if blank is not None:
        raise InvalidInput("the query is empty" if isinstance(query, str) else f"query {blank} is empty")
    if len(items) > MAX_QUERIES:
        raise TooLarge(f"at most {MAX_QUERIES:,} queries per call, got {len(items):,}")
    for i, q in enumerate(items):
        if len(q) > MAX_QUERY_CHARS:
            raise TooLarge(f"query {i} has {len(q):,} characters; the limit is {MAX_QUERY_CHARS:,}")
    return items, isinstance(query, str)


def blank(text: str) -> bool:
    """Whether ``text`` holds nothing but whitespace, control (NUL, ESC) and format (U+200B,
    a BOM) characters: the tokenizer drops those, so such a document is no tokens at all."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def document_texts(texts) -> list[str]:
    """Texts to store as documents: none blank. A blank one stored nothing: its id was
    returned as added, and a document it replaced (same id) was gone."""
    items = text_list(texts)
    for i, text in enumerate(items):
        if blank(text):
            raise InvalidInput(f"texts[{i}] is empty or only whitespace, control or format characters")
        if len(text) > MAX_DOCUMENT_CHARS:
            raise TooLarge(f"texts[{i}] has {len(text):,} characters; the limit is "
                           f"{MAX_DOCUMENT_CHARS:,}: split it into several documents")
    return items


def doc_id(value, name: str = "id") -> str:
    """One document id: a str (an int is written out), 1 to MAX_ID_CHARS characters."""
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise InvalidInput(f"{name} must be a string, not {type(value).__name__}")
    # an int too long for an id is not written out: str() of one past 4,300 digits raises
    text = str(value) if isinstance(value, str) or abs(value) < 10 ** MAX_ID_CHARS else ""
    if not text.strip() or len(text) > MAX_ID_CHARS or "\0" in text:
        raise InvalidInput(f"{name} must be 1 to {MAX_ID_CHARS} characters, not blank, no NUL")
    return unicode(text, name)


def id_list(ids, name: str = "ids") -> list[str]:
    """Document ids as a list of str. A bare string is one id, never its characters."""
    if isinstance(ids, (str, int)) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, (bytes, dict)) or not isinstance(ids, Iterable):
        raise InvalidInput(f"{name} must be a list of ids, not {type(ids).__name__}")
    return [doc_id(value, f"{name}[{i}]") for i, value in enumerate(ids)]


def new_ids(ids, n: int) -> list[str | None]:
    """Ids for n new documents: None entries (or no ids at all) are generated later."""
    if ids is None:
        return [None] * n
    if isinstance(ids, (str, numbers.Integral)) and not isinstance(ids, bool):
        ids = [ids]  # one id, as id_list takes it
    if isinstance(ids, (bytes, dict)) or not isinstance(ids, Iterable):
        raise InvalidInput(f"ids must be a list of ids, not {type(ids).__name__}")
    given = list(ids)
    if len(given) != n:
        raise InvalidInput(f"got {len(given)} ids for {n} texts")
    out = [None if value is None else doc_id(value, f"ids[{i}]") for i, value in enumerate(given)]
    named = [i for i in out if i is not None]
    if len(set(named)) != len(named):
        raise InvalidInput("ids must be unique")
    return out


def metadata_list(metadata, n: int) -> list[dict]:
    """One JSON-safe dict per document (a single dict applies to all), numpy scalars made
    the Python values they hold."""
    if metadata is None or isinstance(metadata, dict):
        metadata = [dict(metadata or {}) for _ in range(n)]
    elif isinstance(metadata, (str, bytes)) or not isinstance(metadata, Iterable):
        raise WrongType(f"metadata must be a dict or a list of dicts, not {type(metadata).__name__}")
    else:
        metadata = list(metadata)
    if len(metadata) != n:
        raise InvalidInput(f"got {len(metadata)} metadata entries for {n} texts")
    for i, meta in enumerate(metadata):
        if not isinstance(meta, dict):
            raise InvalidInput(f"metadata[{i}] must be a dict, not {type(meta).__name__}")
    return [json_value(meta, f"metadata[{i}]") for i, meta in enumerate(metadata)]


def json_value(value, name: str, depth: int = 0):
    """``value`` as plain JSON (str keys, finite numbers), at most MAX_METADATA_DEPTH levels
    deep. A numpy scalar or array (what a notebook's rows and columns hold) becomes the
    Python value it holds."""
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInput(f"{name} is nested more than {MAX_METADATA_DEPTH} levels deep")
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{name} has a non-string key {key!r}")
            out[str(json_value(key, name, depth + 1))] = json_value(item, name, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [json_value(item, name, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{name} holds {value}, which JSON cannot store")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        raise InvalidInput(f"{name} holds {value}, an integer beyond 64 bits, which the store cannot compare")
    if isinstance(value, str):
        unicode(value, name)
    elif value is not None and not isinstance(value, (int, float, bool)):
        raise InvalidInput(f"{name} holds a {type(value).__name__}, which JSON cannot store")
    return value


def key_value_pairs(pairs: Iterable[str], name: str) -> dict[str, str]:
    """``key=value`` strings (a command line's --where and --meta, a URL's where=) as a
    dict; the value is what follows the first '='."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{name} expects key=value, got {pair!r}")
        if key in out:  # the last would win: a filter of two values, or a value lost
            raise InvalidInput(f"{name} gives {key!r} twice ({key}={out[key]}, {pair}); give each key once")
        out[key] = value
    return out


def where_filter(where) -> dict | None:
    """key -> a value it must equal, or -> {operator: operand} (WHERE_OPERATORS; several on
    a key must all hold). The store compares values as their JSON text (None: JSON null) or
    as numbers, and finds a key by its name as stored, whatever characters it holds."""
    if where is None or where == {}:
        return None
    if not isinstance(where, dict):
        raise InvalidInput(f"where must be a dict of key -> value, not {type(where).__name__}")
    out, conditions = {}, 0
    for key, condition in where.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"where keys must be non-empty strings, got {key!r}")
        if not isinstance(condition, dict):
            out[key] = _where_value(key, condition)
            conditions += 1
            continue
        if not condition:
            raise InvalidInput(f"where[{key!r}] is an empty dict; give a value or an operator "
                               f"({', '.join(WHERE_OPERATORS)})")
        out[key] = {op: _where_operand(key, op, operand) for op, operand in condition.items()}
        conditions += len(condition)
    if conditions > MAX_WHERE_CONDITIONS:
        raise TooLarge(f"where has {conditions:,} conditions; the limit is {MAX_WHERE_CONDITIONS}")
    return out


def _where_operand(key: str, op, operand):
    """One operator's operand, checked: $in/$nin a list of values, $exists true or false,
    a range bound a string or number (order means nothing for booleans and null)."""
    name = f"where[{key!r}][{op!r}]"
    if op not in WHERE_OPERATORS:
        raise InvalidInput(f"where[{key!r}] has an unknown operator {op!r} (known: {', '.join(WHERE_OPERATORS)}; "
                           "a metadata value that is itself a dict cannot be matched)")
    if op == "$exists":
        return flag(operand, name)
    if op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple)):
            raise InvalidInput(f"{name} must be a list of values, not {type(operand).__name__}")
        if len(operand) > MAX_IN_VALUES:
            raise TooLarge(f"{name} has {len(operand):,} values; the limit is {MAX_IN_VALUES:,}")
        return [_where_value(key, value, name) for value in operand]
    value = _where_value(key, operand, name)
    if op in RANGE_OPERATORS and (value is None or isinstance(value, bool)):
        raise InvalidInput(f"{name} must be a string or a number to compare with, not {json.dumps(value)}")
    return value


def _where_value(key: str, value, name: str | None = None):
    """A value a stored one is compared with: a string, number, boolean or None."""
    name = name or f"where[{key!r}]"
    if isinstance(value, np.generic):  # numpy's 1 or True is compared as Python's
        value = value.item()
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidInput(f"{name} must be a string, number or boolean"
                           f"{' (or a dict of operators)' if name == f'where[{key!r}]' else ''}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{name} is {value}, which no stored value equals")
    if key == "source" and isinstance(value, str) and value.strip() and "\0" not in value:
        value = source_path(value)  # docs/a.txt finds what `index docs` stored, as delete --path does
    return json_value(value, name)  # surrogates, integers beyond 64 bits


_COMPARISON = re.compile(r"([^=!<>]+?)(==|=|!=|>=|<=|>|<)(.*)", re.DOTALL)


def where_conditions(items: Iterable[str], name: str) -> dict:
    """A command line's --where (or a URL's where=) strings as a where filter: KEY=VALUE,
    KEY!=VALUE, KEY>VALUE, KEY>=VALUE, KEY<VALUE, KEY<=VALUE (the value as text; the store
    reads one that spells a number as that number), or a JSON object in where's own form,
    for what a string cannot say ({"team": {"$in": ["a", "b"]}}). Conditions on one key add
    up (year>=2020 and year<2024); one operator given twice on a key is refused, as the last
    would silently win."""
    out: dict[str, dict] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                given = json.loads(item)
            except (ValueError, RecursionError) as exc:  # (what parses, starting with '{', is an object)
                raise InvalidInput(f"{name} {item!r} is not a valid JSON object: {exc}") from None
            conditions = [(key, value if isinstance(value, dict) else {"$eq": value})
                          for key, value in given.items()]
        elif match := _COMPARISON.fullmatch(item):
            key, spelled, value = match.groups()
            conditions = [(key, {COMPARISONS[spelled]: value})]
        else:
            raise InvalidInput(f"{name} expects KEY=VALUE (or !=, <, <=, >, >=; or a JSON object), got {item!r}")
        for key, ops in conditions:
            held = out.setdefault(key, {})
            for op, value in ops.items():
                if op in held:
                    hint = (f'for any of several values: \'{{"{key}": {{"$in": [...]}}}}\'' if op == "$eq"
                            else "give each condition once")
                    raise InvalidInput(f"{name} gives {key!r} {op} twice ({json.dumps(held[op])}, "
                                       f"{json.dumps(value)}); {hint}")
                held[op] = value
    return {key: ops["$eq"] if list(ops) == ["$eq"] else ops for key, ops in out.items()}


def vectors(array, dim: int, name: str = "vectors") -> np.ndarray:
    """A finite (n, dim) float32 array."""
    try:
        array = np.atleast_2d(np.asarray(array, dtype=np.float32))
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be an array of numbers") from None
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidInput(f"{name} must be {dim}-d rows, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInput(f"{name} contain nan or inf")
    return np.ascontiguousarray(array)


UNIT_TOLERANCE = 0.01  # how far from 1 a stored vector's length may be (semsearch check: the same)


def unit_vectors(array, dim: int, name: str = "vectors") -> np.ndarray:
    """Finite (n, dim) float32 rows of length 1 (within 1 %): stored vectors are compared by
    inner product as cosines, so a longer one would top every search and a zero one none."""
    array = vectors(array, dim, name)
    norms = np.linalg.norm(array, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1) > UNIT_TOLERANCE)
    if len(bad):
        raise InvalidInput(f"{name} must be L2-normalised: row {bad[0]} has length {norms[bad[0]]:.4g}")
    return array
