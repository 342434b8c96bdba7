"""The Embedder against the PyTorch model it was exported from, and its edge cases."""
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from semsearch.embedder import (Embedder, background, bucket, bucket_widths, full_rows, padded_rows, plan_batches,
                                window_spans)
from semsearch.errors import InvalidInput, ModelError
from semsearch.export import PROBES
from semsearch.models import packaged_model_path, read_manifest, sha256_file, variant_state
from semsearch.runtime import TokenizerProcesses, cuda_unusable


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
    got, tokens, truncated = embedder.embed_counted([text])
    assert truncated == 0 and tokens == len(embedder.tokenizer.encode(text).ids)
    assert cosines(got, reference.encode([text]))[0] >= 0.9999
    long_text = " ".join(f"word{i}" for i in range(400))
    _, tokens, truncated = embedder.embed_counted([long_text, text])
    assert truncated == 1 and tokens == 256 + len(embedder.tokenizer.encode(text).ids)
    assert len(embedder.tokenizer.encode(long_text).ids) == 256


def test_empty_input_gives_empty_array(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_counts_are_per_call_not_shared(embedder):
    """Concurrent calls each get their own truncation count (no counter on the Embedder)."""
    long_text = "word " * 400
    results = {}

    def work(i):
        results[i] = embedder.embed_counted([long_text] * i + ["short"])[2]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {1: 1, 2: 2, 3: 3, 4: 4}
    assert not hasattr(embedder, "truncated")


def test_concurrent_embeds_match_sequential_ones(embedder):
    groups = [[f"text {i} about topic {j}" * (1 + j % 5) for j in range(40)] for i in range(4)]
    want = [embedder.embed(g) for g in groups]
    got = [None] * 4

    def work(i):
        got[i] = embedder.embed(groups[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, want):
        assert np.max(np.abs(a - b)) <= 1e-5


def test_run_is_one_batch_in_token_order(embedder):
    texts = ["a longer text with several words in it", "short", "mid sized text"]
    tokens = embedder.tokenize(texts)
    assert list(tokens.lengths) == [len(embedder.tokenizer.encode(t).ids) for t in texts]
    assert np.max(np.abs(embedder.run(tokens) - embedder.embed(texts))) <= 1e-5
    picked = tokens.select([2, 0])
    assert np.max(np.abs(embedder.run(picked) - embedder.embed([texts[2], texts[0]]))) <= 1e-5


def test_token_budget_does_not_change_results(embedder):
    texts = PROBES * 3
    want = embedder.embed(texts)
    for budget in (1, 64, 300, 100_000):
        assert np.max(np.abs(embedder.embed(texts, max_batch_tokens=budget) - want)) <= 1e-5


def test_plan_batches_covers_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    widths = bucket_widths(256)
    for (budget, cap, ws), run_cost in itertools.product(
            ((1024, 32, None), (4096, 1024, widths), (10, 8, widths), (10**6, 7, None)), (0, 64, 6000, 10**9)):
        batches = plan_batches(lengths, budget, cap, ws, run_cost)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(500))
        for b in batches:
            width = bucket(int(lengths[b].max()), ws)
            assert len(b) <= cap and (len(b) == 1 or len(b) * width <= budget)
        firsts = [int(lengths[b[0]]) for b in batches]
        assert firsts == sorted(firsts, reverse=True)  # longest first
    assert plan_batches([], 100, 10) == []


def test_plan_batches_weighs_padding_against_the_runs():
    lengths = np.random.default_rng(1).integers(1, 60, size=4096)  # short texts, GPU settings
    widths = bucket_widths(256)

    def padded(batches, ws):  # as the Embedder pads them: widths, and rows too with buckets
        return sum(bucket(int(lengths[b].max()), ws) * int(padded_rows(len(b), full_rows(
            bucket(int(lengths[b].max()), ws), 65536, 1024), ws)) for b in batches)

    free, middle, costly = (plan_batches(lengths, 65536, 1024, None, cost) for cost in (0, 2000, 10**9))
    assert padded(free, None) == lengths.sum()  # runs cost nothing: no padding at all
    assert 59 == len(free) > len(middle) > len(costly) == 4  # runs cost all: the fewest
    assert padded(free, None) < padded(middle, None) < padded(costly, None)
    free, costly = (plan_batches(lengths, 65536, 1024, widths, cost) for cost in (0, 10**9))
    assert padded(free, widths) < padded(costly, widths) and len(free) > len(costly) == 4


def test_windows_grow_from_a_small_first_one_and_shrink_at_the_end():
    for n, largest, first in ((20000, 4096, 512), (7000, 4096, 512), (1500, 4096, 512), (100, 16, 512),
                              (1, 4096, 512), (4097, 4096, 4096)):
        spans = window_spans(n, largest, first)
        sizes = [stop - start for start, stop in spans]
        assert [start for start, _ in spans] == [0, *np.cumsum(sizes)[:-1]] and sum(sizes) == n
        first = min(first, largest)
        assert sizes[0] <= max(first, n) and sizes[0] == min(n, first) or len(sizes) == 1
        assert all(size < largest + first for size in sizes)
        peak = sizes.index(max(sizes))
        assert sizes[:peak + 1] == sorted(sizes[:peak + 1])  # up, then down (the last may take the rest)
        assert sizes[peak:-1] == sorted(sizes[peak:-1], reverse=True)
    assert window_spans(0) == []
    for first, largest in ((0, 4096), (512, 0), (-1, 4096)):
        with pytest.raises(InvalidInput, match="at least one text"):
            window_spans(10, largest, first)
    assert [b - a for a, b in window_spans(20000)] == [512, 1024, 2048, 4096, 4096, 4096, 2064, 1032, 516, 516]


def test_bucket_widths_bound_the_shapes():
    widths = bucket_widths(256)
    assert widths[-1] == 256 and all(a < b <= a * 2 for a, b in zip(widths, widths[1:]))
    assert [bucket(n, widths) for n in (1, 8, 9, 33, 200, 256)] == [8, 8, 16, 40, 208, 256]
    assert bucket(77, None) == 77


@pytest.fixture(scope="module")
def gpu_style(model_folder):
    """A CPU Embedder batched the way the GPU is: bucketed widths, padded rows, the
    three-thread pipeline, and small windows so several are in flight."""
    e = Embedder.from_folder(model_folder, "fp32", device="cpu", threads=2)
    e.widths, e.overlap, e.window = bucket_widths(e.max_length), True, 16
    e.max_batch_size, e.max_batch_tokens = 8, 512
    return e


def test_buckets_and_pipeline_give_the_same_vectors(gpu_style, embedder):
    texts = [f"{'word ' * (i % 37)} number {i}" for i in range(100)] + PROBES
    want = embedder.embed(texts)
    got, tokens, truncated = gpu_style.embed_counted(texts)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert tokens == int(embedder.tokenize(texts).lengths.sum()) and truncated == 1


def test_a_run_pads_its_rows_as_a_planned_batch_does(gpu_style, embedder, monkeypatch):
    shapes, run = [], gpu_style.session.run
    monkeypatch.setattr(gpu_style.session, "run", lambda feeds: shapes.append(feeds["input_ids"].shape) or run(feeds))
    texts = PROBES[:3]
    tokens = gpu_style.tokenize(texts)
    got = gpu_style.run(tokens)  # as the server runs its merged batches
    width = bucket(int(tokens.lengths.max()), gpu_style.widths)
    assert shapes == [(4, width)] and got.shape == (3, gpu_style.dim)  # 3 rows padded to 4, none returned
    assert np.max(np.abs(got - embedder.embed(texts))) <= 1e-5
    gpu_style.run(tokens, max_batch_size=3)  # the caller's limits (the server's) bound the padding
    assert shapes[-1] == (3, width)


def test_pipeline_passes_errors_through_and_stops(gpu_style):
    with pytest.raises(TypeError, match="texts\\[3\\]"):
        gpu_style.embed(["a", "b", "c", 4])
    before = threading.active_count()
    for _ in range(3):
        gpu_style.embed([f"text {i}" for i in range(60)])
    assert threading.active_count() == before  # every worker thread ended


def test_embed_stream_takes_any_iterable_and_gives_windows_in_order(embedder):
    texts = [f"{'word ' * (i % 7)} line {i}" for i in range(700)]  # short: the count is the point
    want = embedder.embed(texts)
    windows = list(embedder.embed_stream(t for t in texts))  # a generator: no len, read as it goes
    assert [len(w) for w in windows] == [512, 188]  # the first window, then the rest
    assert np.max(np.abs(np.concatenate(windows) - want)) <= 1e-5
    assert [w.shape for w in embedder.embed_stream("one text")] == [(1, embedder.dim)]
    # a list is cut into embed's own windows (they shrink at its end), so the very same batches
    assert np.array_equal(np.concatenate(list(embedder.embed_stream(texts))), want)
    with pytest.raises(TypeError, match="texts\\[600\\]"):  # numbered in the whole stream, not its window
        list(embedder.embed_stream(iter(texts[:600] + [7])))


def test_embed_stream_yields_a_window_before_reading_the_next(gpu_style, embedder):
    """A stream that fails (or never ends) has given its first windows' vectors by then."""
    def lines():
        for i in range(40):
            yield f"line {i} of a file being read"
        raise RuntimeError("the file went away")

    got = []
    with pytest.raises(RuntimeError, match="went away"):
        for vectors in gpu_style.embed_stream(lines()):  # windows of 16, pipelined in three threads
            got.append(vectors)
    assert [len(v) for v in got] == [16, 16]
    want = embedder.embed([f"line {i} of a file being read" for i in range(32)])
    assert np.max(np.abs(np.concatenate(got) - want)) <= 1e-5


def test_pipeline_with_tokenizer_processes_gives_the_same_vectors(gpu_style, embedder):
    texts = [f"{'word ' * (i % 37)} text {i}" for i in range(300)] + PROBES
    pool = gpu_style.tokenizing = TokenizerProcesses(gpu_style.tokenizer, False, processes=2, threads=1)
    gpu_style.first_window, gpu_style.window = 128, 256  # windows of 128 and 182: each split in two
    try:
        got, tokens, truncated = gpu_style.embed_counted(texts)
        assert len(pool._workers) == 2 and all(w.poll() is None for w in pool._workers)
    finally:
        gpu_style.tokenizing = TokenizerProcesses(gpu_style.tokenizer, False, 0)
        gpu_style.first_window, gpu_style.window = 16, 16
        pool.close()
    assert np.max(np.abs(got - embedder.embed(texts))) <= 1e-5
    assert tokens == int(embedder.tokenize(texts).lengths.sum()) and truncated == 1


def test_background_raises_the_workers_error_and_stops_early():
    def items():
        yield 1
        yield 2
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError, match="stage failed"):
        list(background(items()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = background(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops: the worker must stop too
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 6


def test_bad_batch_settings_are_invalid_input(embedder):
    for kwargs in ({"batch_size": 0}, {"max_batch_tokens": 0}, {"max_batch_tokens": 2.5}):
        with pytest.raises(InvalidInput):
            embedder.embed(["x"], **kwargs)


def test_numpy_integer_batch_settings_are_taken(embedder):
    """A batch size read from a config array or computed with numpy is an np.int64."""
    vectors = embedder.embed(["a", "b", "c"], batch_size=np.int64(2), max_batch_tokens=np.int32(512))
    np.testing.assert_allclose(vectors, embedder.embed(["a", "b", "c"]), atol=1e-6)


def test_nan_output_is_a_model_error_naming_the_model(model_folder, tmp_path):
    """A graph whose weights went NaN (the hash re-recorded, so only the output shows it)
    must never hand NaN vectors to a collection."""
    import onnx
    from onnx import numpy_helper

    copy = shutil.copytree(model_folder, tmp_path / "model")
    graph = onnx.load(copy / "model.onnx")
    init = next(i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims)
    init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(graph, copy / "model.onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["variants"]["fp32"]["sha256"] = sha256_file(copy / "model.onnx")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    broken = Embedder.from_folder(copy, "fp32", device="cpu")
    with pytest.raises(ModelError, match="all-MiniLM-L6-v2.*NaN.*corrupt"):
        broken.embed(["hello", "world"])


def test_same_size_corruption_with_old_mtime_is_refused(model_folder, tmp_path):
    """Bit rot keeps size and mtime: the file is hashed on every load, nothing is trusted."""
    copy = shutil.copytree(model_folder, tmp_path / "model")
    onnx_file = copy / "model.onnx"
    Embedder.from_folder(copy, "fp32", device="cpu")  # a clean load first
    stat = onnx_file.stat()
    with open(onnx_file, "r+b") as fh:
        fh.seek(stat.st_size // 2)
        byte = fh.read(1)
        fh.seek(stat.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(onnx_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert onnx_file.stat().st_size == stat.st_size
    with pytest.raises(ModelError, match="does not match its manifest"):
        Embedder.from_folder(copy, "fp32", device="cpu")
    assert not list(copy.glob("*.verified"))  # loading writes nothing beside the model


def test_validate_records_figures_in_the_manifest(model_folder, tmp_path, caplog):
    """The bookkeeping of the first GPU load of an fp16 export, exercised with int8 on
    the CPU: figures against the fp32 graph go into the manifest, or a warning when the
    folder is read-only."""
    copy = shutil.copytree(model_folder, tmp_path / "model")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["variants"]["int8"] = {k: manifest["variants"]["int8"][k] for k in ("file", "sha256")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "not validated" in variant_state(read_manifest(copy)["variants"]["int8"])
    e = Embedder.from_folder(copy, "int8", device="cpu")
    info = e.validate()
    recorded = read_manifest(copy)["variants"]["int8"]
    assert recorded["validated"] is True and recorded == info
    assert recorded["validated_on"] == "CPUExecutionProvider" and 0.95 < recorded["min_cosine"] <= 1
    assert variant_state(recorded).startswith("validated on CPU")

    (copy / "manifest.json").write_text(json.dumps(manifest))  # unvalidated again, read-only
    with read_only(copy):
        with caplog.at_level("WARNING", logger="semsearch"):
            Embedder.from_folder(copy, "int8", device="cpu").validate()
        assert "could not record it" in caplog.text
        assert "validated" not in read_manifest(copy)["variants"]["int8"]


@contextlib.contextmanager
def read_only(folder):
    """``folder`` unwritable for this process: by its mode, or for root (whom a mode does not
    stop, as under CI) by a read-only bind mount of the folder onto itself."""
    folder.chmod(0o555)
    mounted = False
    try:
        if os.access(folder, os.W_OK):
            mount = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                                   capture_output=True, text=True)
            if mount.returncode:
                pytest.skip(f"cannot make a folder read-only for root ({mount.stderr.strip()})")
            mounted = True
        assert not os.access(folder, os.W_OK)
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(0o755)


def test_from_folder_needs_no_export_extra(model_folder):
    """A serving box without torch/optimum loads an exported folder and embeds."""
    code = (
        "import sys\n"
        "for m in ('torch', 'optimum', 'transformers', 'onnx', 'semsearch.export'): sys.modules[m] = None\n"
        "from semsearch.embedder import Embedder\n"
        f"e = Embedder.from_folder({str(model_folder)!r}, device='cpu')\n"
        "print(e.embed(['hello']).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 384)"


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
    cuda_unusable() is None, reason="a GPU is present: the CUDA path is exercised by test_cuda_runs_when_present")
def test_cuda_request_without_cuda_is_a_clear_error(model_folder):
    with pytest.raises(ModelError, match="CUDA"):
        Embedder.from_folder(model_folder, "fp32", device="cuda")


@pytest.mark.skipif(cuda_unusable() is not None, reason="needs onnxruntime-gpu and a GPU")
def test_cuda_runs_when_present(model_folder, embedder):
    """fp32 on CUDA is exact (TF32 off): within 1e-5 of the CPU, bucketed and pipelined."""
    gpu = Embedder.from_folder(model_folder, "fp32", device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.overlap and gpu.widths is None
    texts = PROBES * 50
    assert np.max(np.abs(gpu.embed(texts) - embedder.embed(texts))) <= 1e-5


def test_repr_names_model_variant_and_provider(embedder):
    """It was the default <... object at 0x...>: nothing to tell two embedders apart in a log."""
    assert repr(embedder) == f"<Embedder sentence-transformers/all-MiniLM-L6-v2 fp32 384-d on {embedder.providers[0]}>"


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
