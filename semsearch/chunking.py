"""Split document text into token-bounded chunks for the embedding model.

Chunks are cut on the model's own tokenizer so that every chunk fits the model
without truncation (which would silently drop text from the index).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer

MIN_MAX_TOKENS = 8
PIECE_CHARS = 65536  # a segment is tokenised in pieces of this size, in parallel


@dataclass(frozen=True)
class Chunk:
    """A slice of a document: ``text == document[start:end]``."""

    text: str
    start: int  # char offset in the whole document (across all segments)
    end: int
    n_tokens: int  # tokens in ``text`` without special tokens


_PLAIN: dict[int, tuple[Tokenizer, Tokenizer]] = {}


def _plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """Copy without truncation/padding: tokenizer.json may truncate to 128 and pad.

    Copying costs ~40 ms, more than chunking a document, so one copy per tokenizer is kept
    (with the original, so its id cannot be reused).
    """
    cached = _PLAIN.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        tok = Tokenizer.from_str(tokenizer.to_str())
        tok.no_truncation()
        tok.no_padding()
        cached = _PLAIN[id(tokenizer)] = (tokenizer, tok)
    return cached[1]


def count_tokens(text: str, tokenizer: Tokenizer) -> int:
    """Tokens in ``text`` with special tokens, as the model would see it untruncated."""
    return len(_plain_tokenizer(tokenizer).encode(text).ids)


def iter_chunks(
    segments: Iterable[str], tokenizer: Tokenizer, max_tokens: int, overlap: int, lines: bool = False
) -> Iterator[Chunk]:
    """Yield chunks of at most ``max_tokens`` tokens (special tokens excluded).

    ``segments`` are consecutive pieces of one document; chunks never span two
    segments, and consecutive chunks within a segment share about ``overlap``
    tokens. A chunk ends at a word start; with ``lines`` (source code, logs: text
    whose units are lines, not sentences), at a line start where its last half has one,
    after a blank line first (see _first_cut). Arguments are checked now, not on first
    ``next()``.
    """
    _check(max_tokens, overlap)
    return _iter_chunks(segments, _plain_tokenizer(tokenizer), max_tokens, overlap, lines)


def chunk_documents(documents: list[list[str]], tokenizer: Tokenizer, max_tokens: int,
                    overlap: int, lines: Sequence[bool] | None = None) -> list[list[Chunk]]:
    """``iter_chunks`` of many documents (each a list of segments) at once: the same
    chunks, with every segment tokenised in one ``encode_batch`` and every chunk's
    re-count in another, so the tokeniser spreads them over the cores (one document at a
    time ran on one core: on a GPU host, ingest was bound by it, not by the GPU). A
    segment whose chunk needs a second count (re-tokenising its slice came out longer)
    is chunked again one chunk at a time. ``lines``: for each document, iter_chunks's."""
    _check(max_tokens, overlap)
    tok = _plain_tokenizer(tokenizer)
    lines = [False] * len(documents) if lines is None else lines
    segments = [(d, base, seg) for d, doc in enumerate(documents)
                for base, seg in zip(_bases(doc), doc) if seg and not seg.isspace()]
    cut = [_pieces(seg) for _, _, seg in segments]
    encodings = iter(tok.encode_batch([p for pieces, _ in cut for p in pieces], add_special_tokens=False))
    tokens, plans = [], []
    for (d, _, seg), (pieces, starts) in zip(segments, cut):
        offs, words = _offsets(starts, [next(encodings) for _ in pieces])
        breaks = _breaks(seg, offs) if lines[d] else None
        tokens.append((offs, words, breaks))
        plans.append(list(_spans(offs, words, max_tokens, overlap, breaks)))
    texts = [seg[offs[i][0]:offs[j - 1][1]] for (_, _, seg), (offs, _, _), plan in zip(segments, tokens, plans)
             for i, j in plan]
    counted = iter(zip(texts, (len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))))
    out: list[list[Chunk]] = [[] for _ in documents]
    for (d, base, seg), (offs, words, breaks), plan in zip(segments, tokens, plans):
        for (i, j), (text, count) in zip(plan, [next(counted) for _ in plan]):
            if count > max_tokens and j - i > 1:  # from here on, one chunk at a time
                out[d] += _chunks_from(seg, base, tok, max_tokens, overlap, offs, words, i, breaks)
                break
            out[d].append(Chunk(text, base + offs[i][0], base + offs[j - 1][1], count))
    return out


def _check(max_tokens: int, overlap: int) -> None:
    if not isinstance(max_tokens, int) or max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be an integer >= {MIN_MAX_TOKENS}, got {max_tokens!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be an integer with 0 <= overlap < max_tokens ({max_tokens}), got {overlap!r}")


def _bases(segments: list[str]) -> list[int]:
    """Each segment's char offset in the whole document."""
    bases, base = [], 0
    for seg in segments:
        bases.append(base)
        base += len(seg)
    return bases


def _iter_chunks(segments, tok, max_tokens, overlap, lines=False):
    base = 0
    for seg in segments:
        if seg and not seg.isspace():
            yield from _chunk_segment(seg, base, tok, max_tokens, overlap, lines)
        base += len(seg)


def _word_start(words: list, lo: int, k: int) -> int:
    """Move token index ``k`` back to the first token of its word, not below ``lo``.

    Returns ``k`` unchanged when the word reaches back to ``lo`` (one huge word).
    """
    j = k
    while j > lo and words[j] is not None and words[j] == words[j - 1]:
        j -= 1
    return j if j > lo else k


def _pieces(seg: str) -> tuple[list[str], list[int]]:
    """``seg`` cut after whitespace into pieces of at most PIECE_CHARS, and their starts.

    One encode() of a 1 MB string runs on one core and is slow; pieces cut after
    whitespace tokenise the same and encode_batch spreads them over all cores.
    """
    pieces, starts, pos = [], [], 0
    while pos < len(seg):
        end = min(pos + PIECE_CHARS, len(seg))
        if end < len(seg):
            cut = max(seg.rfind(c, pos, end) for c in " \n\t\r")
            end = cut + 1 if cut > pos else end
        pieces.append(seg[pos:end])
        starts.append(pos)
        pos = end
    return pieces, starts


def _offsets(starts: list[int], encodings: list) -> tuple[list, list]:
    """Token char offsets and word ids of a segment from its pieces' encodings."""
    if len(encodings) == 1:  # most segments: one piece, nothing to shift
        return encodings[0].offsets, encodings[0].word_ids
    offs, words, word_base = [], [], 0
    for start, enc in zip(starts, encodings):
        offs.extend((a + start, b + start) for a, b in enc.offsets)
        ids = enc.word_ids
        words.extend(None if w is None else w + word_base for w in ids)
        word_base += 1 + max((w for w in ids if w is not None), default=-1)
    return offs, words


def _encode(seg: str, tok: Tokenizer) -> tuple[list, list]:
    """Token char offsets and word ids of ``seg``."""
    pieces, starts = _pieces(seg)
    return _offsets(starts, tok.encode_batch(pieces, add_special_tokens=False))


def _spans(offs: list, words: list, max_tokens: int, overlap: int,
           breaks: list | None = None) -> Iterator[tuple[int, int]]:
    """The token spans (i, j) of a segment's chunks when every chunk's first cut fits."""
    n, i = len(offs), 0
    while i < n:
        j = _first_cut(words, i, n, max_tokens, breaks)
        yield i, j
        if j >= n:
            return
        i = _word_start(words, i, max(i + 1, j - overlap))


def _first_cut(words: list, i: int, n: int, max_tokens: int, breaks: list | None = None) -> int:
    """Where a chunk starting at token ``i`` ends first: ``max_tokens`` on, moved back
    to a word start unless that would halve the chunk. With ``breaks`` (_breaks: code,
    logs), moved back to the last line start of the chunk's last half, the last one after
    a blank line if there is one: a chunk of code cut mid-line split a statement."""
    j = min(i + max_tokens, n)
    if j >= n:
        return j
    lo = i + max_tokens // 2
    if breaks is not None:
        for level in (2, 1):
            k = next((k for k in range(j, lo, -1) if breaks[k] >= level), None)
            if k is not None:
                return k
    return _word_start(words, lo, j)


def _breaks(seg: str, offs: list) -> list[int]:
    """For each token of a segment, the line breaks before it, since the token before: 0,
    1, or 2 for a blank line (or more)."""
    ends = [0] + [b for _, b in offs[:-1]]
    return [min(seg.count("\n", end, a), 2) for end, (a, _) in zip(ends, offs)]


def _chunk_segment(seg: str, base: int, tok: Tokenizer, max_tokens: int, overlap: int, lines: bool = False):
    offs, words = _encode(seg, tok)
    breaks = _breaks(seg, offs) if lines else None
    yield from _chunks_from(seg, base, tok, max_tokens, overlap, offs, words, 0, breaks)


def _chunks_from(seg: str, base: int, tok: Tokenizer, max_tokens: int, overlap: int,
                 offs: list, words: list, i: int, breaks: list | None = None) -> Iterator[Chunk]:
    """A segment's chunks from token ``i`` on, each counted (and cut shorter) as it goes."""
    n = len(offs)
    while i < n:
        j = _first_cut(words, i, n, max_tokens, breaks)
        while True:
            start, end = offs[i][0], offs[j - 1][1]
            text = seg[start:end]
            # Re-tokenising the slice can differ at the edges; it is what the model will see.
            count = len(tok.encode(text, add_special_tokens=False).ids)
            if count <= max_tokens or j - i <= 1:
                break
            j = _word_start(words, i, max(i + 1, j - (count - max_tokens)))
        yield Chunk(text, base + start, base + end, count)
        if j >= n:
            return
        nxt = max(i + 1, j - overlap)
        i = _word_start(words, i, nxt)
