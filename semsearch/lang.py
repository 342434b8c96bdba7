"""Writing systems: how CJK text is cut into words for FTS5, and when the model cannot read it.

FTS5's ``unicode61`` tokenizer keeps a run of Han, Hangul or Kana characters as one token,
so 임베딩 never matches 임베딩은 (the word with its particle attached), and Chinese and
Japanese, written without spaces, become one token a sentence. The lexical index is fed
each such run as its overlapping character bigrams instead (the scheme of Lucene's
CJKBigramFilter), and a query word as the phrase of its bigrams: a word of two or more
characters is found inside every longer run that contains it. FTS5's ``trigram``
tokenizer was measured and rejected: it cannot match a query shorter than three
characters, and most Chinese and Korean words are two (see benchmarks/README.md).
"""
from __future__ import annotations

import re
import unicodedata

# Hangul Jamo, CJK punctuation-free ranges: Hiragana + Katakana, Hangul compatibility Jamo,
# CJK extension A, CJK unified ideographs, Hangul syllables, CJK compatibility ideographs
CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_RUN = re.compile(f"[{CJK}]+")
WORD = re.compile(r"\w+")
ENGLISH_ONLY_MODELS = frozenset({"sentence-transformers/all-MiniLM-L6-v2"})
SAMPLE_CHARS = 200_000  # letters looked at to decide a collection's script


def bigrams(run: str) -> list[str]:
    """A CJK run as its overlapping bigrams; one character stays itself."""
    return [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]


def _written(run: str) -> str:
    """A CJK run as the lexical index reads it: its bigrams, spaced apart and from the text
    around it (fts_positions maps each character back)."""
    return " " + " ".join(bigrams(run)) + " "


def fts_text(text: str) -> str:
    """Text as the lexical index reads it: every CJK run written as its bigrams."""
    if not CJK_RUN.search(text):
        return text
    return CJK_RUN.sub(lambda m: _written(m.group()), text)


def fts_positions(text: str) -> tuple[str, list[tuple[int, int]]]:
    """fts_text(text) and, for each of its characters, the [start, end) of ``text`` it
    stands for (a space _written adds: none, at its place), so that a match found in the
    one is found in the other (Store.match_spans)."""
    out: list[str] = []
    where: list[tuple[int, int]] = []
    at = 0
    for run in CJK_RUN.finditer(text):
        out.append(text[at:run.start()])
        where += [(i, i + 1) for i in range(at, run.start())]
        out.append(_written(run.group()))
        where.append((run.start(), run.start()))  # the space before the bigrams
        for i, piece in enumerate(bigrams(run.group())):  # each bigram, then a space
            where += [(run.start() + i + j, run.start() + i + j + 1) for j in range(len(piece))]
            where.append((run.start() + i + len(piece), run.start() + i + len(piece)))
        at = run.end()
    out.append(text[at:])
    where += [(i, i + 1) for i in range(at, len(text))]
    return "".join(out), where


def fts_terms(text: str) -> list[str]:
    """The words of ``text`` as FTS5 terms, each quoted so FTS5 syntax cannot break it.

    A CJK run becomes the phrase of its bigrams; a single CJK character a prefix query
    (inside a longer run it only ever starts a bigram)."""
    terms = []
    for word in WORD.findall(text.lower()):
        for piece in CJK_RUN.split(word):
            if piece:
                terms.append(f'"{piece}"')
        for run in CJK_RUN.findall(word):
            terms.append(f'"{" ".join(bigrams(run))}"' + ("*" if len(run) == 1 else ""))
    return terms


def script_of(char: str) -> str:
    """The script a letter belongs to, by its Unicode name: LATIN, HANGUL, CJK, CYRILLIC..."""
    name = unicodedata.name(char, "")
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "KANA"
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def main_script(texts) -> tuple[str, float]:
    """The most common script among the letters of ``texts`` and its share of them."""
    counts: dict[str, int] = {}
    seen = 0
    for text in texts:
        for char in text:
            if char.isalpha():
                script = script_of(char)
                counts[script] = counts.get(script, 0) + 1
                seen += 1
        if seen >= SAMPLE_CHARS:
            break
    if not seen:
        return "LATIN", 0.0
    script = max(counts, key=counts.get)
    return script, counts[script] / seen


def script_notice(texts, model_name: str) -> str | None:
    """A one-line notice when most of the text is in a script an English-only model
    was not trained on; None otherwise (or when the model's languages are unknown)."""
    if model_name not in ENGLISH_ONLY_MODELS:
        return None
    script, share = main_script(texts)
    if script == "LATIN" or share < 0.5:
        return None
    return (f"most of this text ({share:.0%} of its letters) is in {script.title()} script, which "
            f"{model_name} was not trained on: dense and hybrid results will be poor. Export a "
            f"multilingual model (`semsearch export PATH_TO_HF_FOLDER`) and index with `--model` "
            f"it, or search with `--mode lexical`.")
