"""The Embedder against the PyTorch model it was exported from, and its edge cases."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from semsearch.embedder import Embedder
from semsearch.errors import ModelError
from semsearch.export import PROBES
from semsearch.models import packaged_model_path


@pytest.fixture(scope="session")
def reference():
    """sentence-transformers on the packaged folder: the parity reference."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(packaged_model_path()), device="cpu")


def cosines(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_matches_sentence_transformers_on_probes(embedder, reference):
    want = reference.encode(PROBES, normalize_embeddings=True)
    got = embedder.embed(PROBES)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert cosines(got, want).min() >= 0.9999


def test_int8_keeps_mean_cosine_above_097(embedder_int8, reference):
    want = reference.encode(PROBES, normalize_embeddings=True)
    assert cosines(embedder_int8.embed(PROBES), want).mean() >= 0.97


def test_manifest_records_model_facts_and_validation(model_folder):
    manifest = json.loads((model_folder / "manifest.json").read_text())
    assert (manifest["dim"], manifest["max_length"], manifest["pooling"]) == (384, 256, "mean")
    assert manifest["normalize"] is True
    for variant in ("fp32", "int8"):
        figures = manifest["variants"][variant]
        assert figures["validated"] and figures["min_cosine"] > 0.9
        assert len(figures["sha256"]) == 64


def test_embeddings_are_unit_length_float32(embedder):
    vectors = embedder.embed(["one", "two words", "three words here"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_results(embedder):
    single = embedder.embed(PROBES, batch_size=1)
    batched = embedder.embed(PROBES, batch_size=64)
    assert np.max(np.abs(single - batched)) <= 1e-5


def test_length_sorting_restores_input_order(embedder):
    texts = ["short", "a much longer sentence " * 20, "mid length text here", "x"]
    together = embedder.embed(texts, batch_size=2)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    assert np.max(np.abs(together - alone)) <= 1e-5


def test_truncates_at_model_max_256_not_tokenizer_json_128(embedder, reference):
    text = " ".join(f"word{i}" for i in range(100))  # ~200 word pieces: between 128 and 256
    assert 128 < len(embedder.tokenizer.encode(text).ids) < 256
    before = embedder.truncated
    got = embedder.embed([text])
    assert embedder.truncated == before
    assert cosines(got, reference.encode([text]))[0] >= 0.9999
    long_text = " ".join(f"word{i}" for i in range(400))
    embedder.embed([long_text])
    assert embedder.truncated == before + 1
    assert len(embedder.tokenizer.encode(long_text).ids) == 256


def test_empty_input_gives_empty_array(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_non_string_is_a_type_error(embedder):
    with pytest.raises(TypeError, match="texts\\[1\\]"):
        embedder.embed(["fine", 42])


def test_query_kind_applies_model_prompt(embedder):
    # all-MiniLM-L6-v2 defines no prompts, so kinds must not change the vectors
    assert np.allclose(embedder.embed(["hello"], kind="query"), embedder.embed(["hello"]), atol=1e-6)
    with pytest.raises(ValueError):
        embedder.embed(["hello"], kind="document")


def test_onnx_file_that_differs_from_manifest_is_refused(model_folder, tmp_path):
    copy = shutil.copytree(model_folder, tmp_path / "model")
    with open(copy / "model.onnx", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="re-export"):
        Embedder.from_folder(copy, "fp32", device="cpu")


def test_folder_without_manifest_is_a_model_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="manifest"):
        Embedder.from_folder(tmp_path)


def test_missing_variant_is_a_model_error(model_folder):
    with pytest.raises(ModelError, match="fp16"):
        Embedder.from_folder(model_folder, "fp16", device="cpu")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="a GPU is present: the CUDA path is exercised by test_cuda_runs_when_present")
def test_cuda_request_without_cuda_is_a_clear_error(model_folder):
    with pytest.raises(ModelError, match="CUDA"):
        Embedder.from_folder(model_folder, "fp32", device="cuda")


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs onnxruntime-gpu and a GPU")
def test_cuda_runs_when_present(model_folder, embedder):
    gpu = Embedder.from_folder(model_folder, "fp32", device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    assert cosines(gpu.embed(PROBES), embedder.embed(PROBES)).min() >= 0.999


def test_auto_device_reports_the_provider_it_uses(embedder):
    assert embedder.providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_query_path_never_imports_torch_or_optimum(model_folder, tmp_path):
    code = (
        "import sys, semsearch\n"
        "from semsearch.embedder import Embedder\n"
        "from semsearch.collection import Collection\n"
        f"c = Collection.create({str(tmp_path / 'c')!r})\n"
        "c.add_texts(['a document about wings'])\n"
        "assert c.search('aircraft wing', k=1, mode='hybrid')\n"
        "heavy = [m for m in ('torch', 'optimum', 'transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
