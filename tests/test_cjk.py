"""Korean, Chinese and Japanese: lexical search finds a word inside its longer forms, the
CLI says when the model cannot read the collection's script, and another BERT-style model
exported with `semsearch export` works end to end."""
import json

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.lang import fts_text, main_script, script_notice

DOCS = {
    # 임베딩 ("embedding") with the particles 은, 을, 으로 attached
    "ko-1": "임베딩은 문장의 의미를 벡터로 나타낸다.",
    "ko-2": "트랜스포머 모델이 임베딩을 만든다.",
    "ko-3": "검색 시스템은 임베딩으로 문서를 찾는다.",
    "ko-4": "주의 메커니즘은 변환기의 핵심이다.",
    # 向量 ("vector") and 嵌入 ("embedding"): two-character words inside unspaced sentences
    "zh-1": "向量检索使用嵌入表示文本的含义。",
    "zh-2": "猫在桌子上睡觉。",
    # 埋め込み ("embedding") and モデル ("model")
    "ja-1": "埋め込みは文の意味をベクトルで表す。",
    "ja-2": "モデルが埋め込みを作る。",
    "en-1": "Transformers turn sentences into embeddings for semantic search.",
    "en-2": "Simmer the tomato sauce slowly with garlic.",
}


@pytest.fixture(scope="module")
def coll(collection_of):
    return collection_of(DOCS)


def lexical_ids(coll, query):
    return {h.id for h in coll.search(query, k=10, mode="lexical")}


def test_a_korean_word_is_found_with_its_particles_attached(coll):
    assert lexical_ids(coll, "임베딩") == {"ko-1", "ko-2", "ko-3"}


def test_a_two_character_korean_word_is_found(coll):
    assert lexical_ids(coll, "모델") == {"ko-2"}


def test_chinese_words_are_found_inside_unspaced_sentences(coll):
    assert lexical_ids(coll, "向量") == {"zh-1"}
    assert lexical_ids(coll, "嵌入") == {"zh-1"}
    assert lexical_ids(coll, "猫") == {"zh-2"}  # one character


def test_japanese_words_are_found_across_kanji_and_kana(coll):
    assert lexical_ids(coll, "埋め込み") == {"ja-1", "ja-2"}
    assert lexical_ids(coll, "モデル") == {"ja-2"}


def test_a_cjk_query_word_absent_from_the_text_finds_nothing(coll):
    assert lexical_ids(coll, "데이터베이스") == set()


def test_english_beside_cjk_still_stems(coll):
    assert lexical_ids(coll, "embedding") == {"en-1"}
    assert lexical_ids(coll, "garlic sauces") == {"en-2"}


def test_hybrid_search_in_korean_puts_lexical_matches_first(coll):
    top = [h.id for h in coll.search("임베딩", k=3, mode="hybrid")]
    assert set(top) == {"ko-1", "ko-2", "ko-3"}


def test_only_cjk_runs_are_rewritten_for_the_index():
    assert fts_text("plain English text") == "plain English text"
    assert fts_text("BERT모델") == "BERT 모델 "


def test_the_main_script_of_a_text_is_counted_over_its_letters():
    assert main_script(["임베딩은 문장의 의미를 nice"])[0] == "HANGUL"
    assert main_script(["Simmer the sauce 1234"]) == ("LATIN", 1.0)


def test_an_english_only_model_on_korean_text_gets_a_notice_naming_the_fix():
    notice = script_notice([DOCS["ko-1"], DOCS["ko-2"]], "sentence-transformers/all-MiniLM-L6-v2")
    assert "Hangul" in notice and "semsearch export" in notice
    assert script_notice([DOCS["en-1"]], "sentence-transformers/all-MiniLM-L6-v2") is None


def test_index_and_info_say_once_that_the_default_model_cannot_read_korean(tmp_path, home):
    folder = tmp_path / "ko"
    folder.mkdir()
    for key, text in DOCS.items():
        if key.startswith("ko"):
            (folder / f"{key}.txt").write_text(text * 3, encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(cli, ["index", str(folder), "--name", "ko"])
    assert out.exit_code == 0, out.output
    assert out.output.count("Hangul script") == 1 and "semsearch export" in out.output
    out = runner.invoke(cli, ["info", "ko"])
    assert out.exit_code == 0 and out.output.count("Hangul script") == 1
    assert json.loads(runner.invoke(cli, ["info", "ko", "--json"]).output)["notice"]


def test_an_english_collection_gets_no_notice(tmp_path, home):
    (tmp_path / "en.txt").write_text(DOCS["en-1"])
    out = CliRunner().invoke(cli, ["index", str(tmp_path / "en.txt"), "--name", "en"])
    assert out.exit_code == 0 and "note:" not in out.output


def tiny_bert(folder):
    """A randomly initialised 2-layer BERT with a WordPiece vocabulary written here."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir()
    chars = sorted({ch for text in DOCS.values() for ch in text if ch.isalpha() and not ch.isascii()})
    words = "the a of to wing flutter speed model search embedding sauce garlic".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##s", "##ing", "##ed"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True,
                                  tokenize_chinese_chars=True)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    return folder


def test_another_bert_model_exports_and_serves_a_korean_collection_end_to_end(tmp_path, home):
    model = tiny_bert(tmp_path / "tiny-bert")
    runner = CliRunner()
    out = runner.invoke(cli, ["export", str(model)])
    assert out.exit_code == 0, out.output
    docs = tmp_path / "docs"
    docs.mkdir()
    for key in ("ko-1", "ko-2", "ko-4", "en-2"):
        (docs / f"{key}.txt").write_text(DOCS[key], encoding="utf-8")
    out = runner.invoke(cli, ["index", str(docs), "--name", "tiny", "--model", str(model)])
    assert out.exit_code == 0, out.output
    assert "note:" not in out.output  # a model of unknown languages: nothing to warn about
    info = json.loads(runner.invoke(cli, ["info", "tiny", "--json"]).output)
    assert (info["model"]["name"], info["model"]["dim"], info["documents"]) == ("tiny-bert", 32, 4)
    for mode in ("dense", "lexical", "hybrid"):
        out = runner.invoke(cli, ["search", "tiny", "임베딩", "--mode", mode, "--json"])
        assert out.exit_code == 0, out.output
        names = [h["id"].rsplit("/", 1)[-1] for h in json.loads(out.output)]
        assert names, mode
        if mode == "lexical":  # the model ranks at random, but the words still match
            assert set(names) == {"ko-1.txt", "ko-2.txt"}
        if mode == "hybrid":  # found by both sides, so ahead of what only the dense side has
            assert set(names[:2]) == {"ko-1.txt", "ko-2.txt"}
