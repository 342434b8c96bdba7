"""The exported graphs keep no float arithmetic on shapes (export.fold_static_shapes).

A float computed from a Shape node runs on the CPU under every execution provider, so on
CUDA it costs a Memcpy per use and blocks CUDA graph capture.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from semsearch.export import fold_static_shapes


def shape_only_floats(model) -> list[str]:
    """Float values computed only from Shape outputs and small constants (not weight
    tables: a position embedding gathered by sequence length is real data)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    const = {t.name for t in graph.initializer if np.prod(t.dims) <= 64}
    shapey: set[str] = set()
    for node in graph.node:
        if node.op_type == "Constant":
            const.update(node.output)
        elif node.op_type == "Shape" or (
                node.input and set(node.input) <= const | shapey and shapey & set(node.input)):
            shapey.update(node.output)
    return sorted(name for name in shapey if types.get(name) == TensorProto.FLOAT)


@pytest.mark.parametrize("file", ["model.onnx", "model_int8.onnx"])
def test_exported_graph_has_no_float_shape_arithmetic(model_folder, file):
    model = onnx.load(model_folder / file)
    assert shape_only_floats(model) == []
    assert [n.name for n in model.graph.node if n.op_type == "Sqrt"] == []  # the attention scales


def synthetic():
    """y = x * (1 / sqrt(x.shape[-1])) * sqrt(x.shape[0]): one static chain, one dynamic."""
    def chain(tag, start, end):
        return [
            helper.make_node("Shape", ["x"], [f"{tag}_shape"]),
            helper.make_node("Slice", [f"{tag}_shape", f"{tag}_start", f"{tag}_end"], [f"{tag}_dim"]),
            helper.make_node("Cast", [f"{tag}_dim"], [f"{tag}_float"], to=TensorProto.FLOAT),
            helper.make_node("Sqrt", [f"{tag}_float"], [f"{tag}_sqrt"]),
        ], [helper.make_tensor(f"{tag}_start", TensorProto.INT64, [1], [start]),
            helper.make_tensor(f"{tag}_end", TensorProto.INT64, [1], [end])]

    static, static_init = chain("last", -1, 2**63 - 1)
    dynamic, dynamic_init = chain("batch", 0, 1)
    nodes = static + dynamic + [
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Div", ["one", "last_sqrt"], ["scale"]),
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "batch_sqrt"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], static_init + dynamic_init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_fold_replaces_the_static_chain_and_keeps_the_dynamic_one():
    folded = fold_static_shapes(synthetic())
    onnx.checker.check_model(folded)
    assert shape_only_floats(folded) == ["batch_float", "batch_sqrt"]  # the batch dim is not static
    assert sorted(n.op_type for n in folded.graph.node) == ["Cast", "Mul", "Mul", "Shape", "Slice", "Sqrt"]
    scale = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}["scale"]
    assert scale.dtype == np.float32 and scale.tolist() == [np.float32(1) / np.sqrt(np.float32(4))]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32) * 7
    want = run(synthetic(), x)
    assert np.array_equal(run(folded, x), want)
    assert np.array_equal(want, x * np.float32(0.5) * np.sqrt(np.float32(3)))


def test_export_refuses_what_is_not_a_model_or_not_a_folder_in_one_line(tmp_path, model_folder):
    """A folder that is not a model was transformers' ValueError listing every model type
    (8 KB on one line); an --out that is a file failed after the whole export; an --out
    folder holding anything else was deleted with the files in it."""
    from semsearch.errors import ModelError
    from semsearch.export import export
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not a model")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{}")
    for source in ("notes", "bare"):
        with pytest.raises(ModelError) as err:
            export(str(tmp_path / source), out=tmp_path / f"out-{source}", quantize="none", log=lambda m: None)
        assert len(str(err.value)) < 300 and "\n" not in str(err.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelError, match="is a file"):
        export(None, out=tmp_path / "file", log=lambda m: None)
    mine = tmp_path / "models"  # --out (even --force) replaced a folder whole, whatever it held
    (mine / "other-model").mkdir(parents=True)
    (mine / "other-model" / "weights.bin").write_bytes(b"years of training")
    with pytest.raises(ModelError, match="not an export"):
        export(None, out=mine, quantize="none", force=True, log=lambda m: None)
    assert (mine / "other-model" / "weights.bin").read_bytes() == b"years of training"
    assert not list(tmp_path.glob(".export-*"))


def test_an_export_killed_part_way_leaves_nothing_the_next_export_keeps(tmp_path, model_folder):
    """A killed export left its scratch folder (~100 MB here, GBs for large models) in the
    cache forever; the next export removes it, and a forced re-export replaces the folder
    whole: the model folder is the old export or the new one, never a mix. (One export
    here, not two: the killed one and the next are both forced over a copy of the session's.)"""
    import hashlib
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from semsearch.embedder import Embedder
    from semsearch.export import VARIANT_FILES, export
    out = shutil.copytree(model_folder, tmp_path / "model")  # fp32 and int8
    files = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    before = files()
    assert VARIANT_FILES["int8"] in before
    cmd = [sys.executable, "-m", "semsearch", "export", "--out", str(out), "--quantize", "none", "--force"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".export-*/raw-none")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert list(tmp_path.glob(".export-*")), "expected the kill to land mid-export"
    assert files() == before  # the old export, untouched
    export(None, out=out, quantize="none", force=True, log=lambda m: None)
    assert not list(tmp_path.glob(".export-*")) and Embedder.load(str(out), device="cpu").dim == 384
    assert files()["manifest.json"] != before["manifest.json"]
    assert not (out / VARIANT_FILES["int8"]).exists()  # replaced whole: nothing of the old one left


def test_export_of_a_model_already_exported_imports_no_exporter(model_folder):
    """`semsearch export` (make demo runs it every time) answers from the cache without
    importing optimum, torch or onnx: that import alone took 7-15 s."""
    import subprocess
    import sys

    code = ("import sys; from semsearch.export import export; folder = export(log=lambda m: None); "
            "print(folder); print(sorted(m for m in ('optimum', 'torch', 'onnx', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == str(model_folder)
    assert out[1] == "[]"
