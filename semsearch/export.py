"""HF model folder or hub id -> a validated ONNX model folder with a manifest.

Export-only code: torch, transformers and optimum are imported inside functions so that
``import semsearch`` and the query path never load them.

The exported graph ends in pooling and (when the model normalises) L2 normalisation, so
every variant outputs ``sentence_embedding`` (batch, dim): the runtime is the same for
every model, and on a GPU only the small pooled output leaves the device.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import ModelError, ModelNotFound
from .models import MANIFEST, PROBES, VARIANT_FILES, check_variant, exported_folder, sha256_file, source_for

OUTPUT = "sentence_embedding"

def read_st_config(source: Path) -> dict:
    """Pooling, normalisation, max length and prompts from sentence-transformers files."""
    def load(name: str) -> dict:
        path = source / name
        return json.loads(path.read_text()) if path.is_file() else {}

    modules = load("modules.json")
    pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), "1_Pooling")
    pooling_cfg = load(f"{pooling_dir}/config.json")
    if pooling_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pooling_cfg.get("pooling_mode_max_tokens"):
        pooling = "max"
    else:
        pooling = "mean"  # sentence-transformers' default for a plain HF model
    config = load("config.json")
    st_max = load("sentence_bert_config.json").get("max_seq_length")
    max_length = st_max or min(config.get("max_position_embeddings", 512), 512)
    prompts = load("config_sentence_transformers.json").get("prompts", {})
    return {
        "pooling": pooling,
        "normalize": any(m["type"].endswith("Normalize") for m in modules) or not modules,
        "max_length": int(max_length),
        "prompts": {
            "query": prompts.get("query", ""),
            "passage": prompts.get("passage", prompts.get("document", "")),
        },
        "dim": pooling_cfg.get("word_embedding_dimension") or config.get("hidden_size"),
    }


def append_pooling(model, pooling: str, normalize: bool):
    """Add masked pooling (+ L2 normalisation) after ``last_hidden_state``."""
    from onnx import TensorProto, helper

    graph = model.graph
    hidden = next(o for o in graph.output if o.name == "last_hidden_state").name
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pool_mask", "pool_axis_last"], ["pool_mask3"]),
    ]
    consts = [
        helper.make_tensor("pool_axis_last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("pool_axis_seq", TensorProto.INT64, [1], [1]),
        helper.make_tensor("pool_eps", TensorProto.FLOAT, [], [1e-9]),
    ]
    pooled = "pooled" if normalize else OUTPUT
    if pooling == "mean":
        nodes += [
            helper.make_node("Mul", [hidden, "pool_mask3"], ["pool_masked"]),
            helper.make_node("ReduceSum", ["pool_masked", "pool_axis_seq"], ["pool_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["pool_mask3", "pool_axis_seq"], ["pool_count"], keepdims=0),
            helper.make_node("Max", ["pool_count", "pool_eps"], ["pool_count_safe"]),
            helper.make_node("Div", ["pool_sum", "pool_count_safe"], [pooled]),
        ]
    elif pooling == "cls":
        consts.append(helper.make_tensor("pool_zero", TensorProto.INT64, [], [0]))
        nodes = [helper.make_node("Gather", [hidden, "pool_zero"], [pooled], axis=1)]
    elif pooling == "max":
        consts += [helper.make_tensor("pool_neg", TensorProto.FLOAT, [], [-1e9]),
                   helper.make_tensor("pool_one", TensorProto.FLOAT, [], [1.0])]
        nodes += [  # padded positions get -1e9 so they never win the max
            helper.make_node("Sub", ["pool_one", "pool_mask3"], ["pool_pad"]),
            helper.make_node("Mul", ["pool_pad", "pool_neg"], ["pool_penalty"]),
            helper.make_node("Add", [hidden, "pool_penalty"], ["pool_shifted"]),
            helper.make_node("ReduceMax", ["pool_shifted", "pool_axis_seq"], [pooled], keepdims=0),
        ]
    else:
        raise ModelError(f"unsupported pooling mode {pooling!r}")
    if normalize:
        nodes.append(helper.make_node("LpNormalization", [pooled], [OUTPUT], axis=-1, p=2))
    graph.initializer.extend(consts)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", "dim"]))
    return model


def fold_static_shapes(model):
    """Fold float values computed from static dims of a dynamic shape into initializers.

    optimum's SDPA export computes each layer's attention scale as
    ``Sqrt(Cast(Slice(Shape(q))))`` although the head dim is static. ONNX Runtime keeps
    shape arithmetic on the CPU, so on CUDA every layer's scale needs a Memcpy to the
    device, and the graph cannot be captured as a CUDA graph. A ``Shape`` output is read
    as a vector of known dims (None where dynamic); Slice, Cast, Sqrt, Div and Mul are
    evaluated with numpy where their inputs are known (numpy's float32 sqrt and division
    are correctly rounded, like ONNX Runtime's: the folded values are bit-identical; with
    the scale constant, ONNX Runtime then fuses it into the Q.K MatMul, which moves fp32
    embeddings by ~1e-7: 1.79e-7 from PyTorch after, 1.75e-7 before). Only float values
    are replaced; int shape arithmetic (Reshape targets) stays as it was.
    Graphs with subgraphs (If, Loop) are left alone: the dead-node walk does not see them.
    """
    import onnx
    from onnx import helper, numpy_helper

    if any(a.type == onnx.AttributeProto.GRAPH for node in model.graph.node for a in node.attribute):
        return model

    def known_dims(v):
        return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    dims = {v.name: known_dims(v) for v in [*inferred.input, *inferred.value_info]
            if v.type.tensor_type.HasField("shape")}
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded = set()
    for node in graph.node:  # nodes are in topological order
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        args = [values.get(name) for name in node.input]
        if node.op_type == "Constant" and "value" in attrs:
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        if node.op_type == "Shape" and node.input[0] in dims:
            out = np.array(dims[node.input[0]][attrs.get("start", 0):attrs.get("end")], dtype=object)
        elif any(a is None for a in args) or (node.op_type != "Slice" and any(a.dtype == object for a in args)):
            continue
        elif node.op_type == "Slice":
            data, starts, ends, axes, steps = args + [None] * (5 - len(args))
            index = [slice(None)] * data.ndim
            for i, axis in enumerate(range(len(starts)) if axes is None else axes):
                index[axis] = slice(int(starts[i]), int(ends[i]), 1 if steps is None else int(steps[i]))
            out = data[tuple(index)]
            if out.dtype == object and None not in out:
                out = out.astype(np.int64)
        elif node.op_type == "Cast":
            out = args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        elif node.op_type in ("Sqrt", "Div", "Mul") and all(a.dtype.kind == "f" for a in args):
            out = {"Sqrt": np.sqrt, "Div": np.divide, "Mul": np.multiply}[node.op_type](*args)
        else:
            continue
        values[node.output[0]] = out
        folded.add(node.output[0])
    wanted = {name for node in graph.node if node.output[0] not in folded for name in node.input}
    replaced = {name for name in folded & wanted if values[name].dtype.kind == "f"}
    graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in sorted(replaced))
    producer = {out: node for node in graph.node for out in node.output if out not in replaced}
    needed, todo = set(), [o.name for o in graph.output]
    while todo:
        name = todo.pop()
        if name in producer and name not in needed:
            needed.add(name)
            todo.extend(producer[name].input)
    keep = [node for node in graph.node if any(out in needed for out in node.output)]
    del graph.node[:]
    graph.node.extend(keep)
    return model


def reference_embeddings(source: str, texts: list[str], cfg: dict) -> np.ndarray:
    """The PyTorch model's embeddings, pooled the same way sentence-transformers does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=cfg["max_length"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    if cfg["pooling"] == "cls":
        pooled = hidden[:, 0]
    elif cfg["pooling"] == "max":
        pooled = (hidden + (1 - mask) * -1e9).max(dim=1).values
    else:
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if cfg["normalize"]:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled.numpy()


def ensure_exported(model: str | None = None, log=lambda msg: print(msg, file=sys.stderr)) -> Path:
    """The exported folder of ``model``, exporting it once (into the cache) if it is missing."""
    folder = exported_folder(model)
    if (folder / MANIFEST).is_file():
        return folder
    try:
        return export(model, out=folder, log=log)
    except ModelError as exc:
        raise type(exc)(f"model {model or 'default'} is not exported yet and {exc}") from None


def export(
    model: str | None = None,
    out: str | Path | None = None,
    optimize: str = "none",
    quantize: str = "int8",
    fp16: bool = False,
    force: bool = False,
    log=lambda msg: print(msg, file=sys.stderr),
) -> Path:
    """Export, optimise, quantise and validate ``model``; return the model folder.

    ``optimize`` is optimum's optimisation of the fp32 graph. The default is none: ONNX
    Runtime fuses the graph itself when it loads it, and measured here that is ~7 %
    faster on short texts than optimum's O2 graph (equal on long ones).
    """
    name, source = source_for(model)
    folder = Path(out) if out else exported_folder(model)
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"cannot export to {folder}: it is a file")
    if out and folder.is_dir() and not (folder / MANIFEST).is_file() and any(folder.iterdir()):
        # the export replaces its folder whole: never a folder of other things (--out ~/models)
        raise ModelError(f"cannot export to {folder}: it holds files and is not an export "
                         f"(no {MANIFEST}); give a new or empty folder")
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ModelError(f"{source} is not a Hugging Face model folder (it has no config.json)")
    if (folder / MANIFEST).is_file() and not force:
        log(f"{name} is already exported in {folder} (use --force to redo it)")
        return folder
    if optimize not in ("O1", "O2", "O3", "none"):
        raise ModelError(f"--optimize must be O1, O2, O3 or none, not {optimize!r}")
    if quantize not in ("int8", "none"):
        raise ModelError(f"--quantize must be int8 or none, not {quantize!r}")
    try:  # only now: importing optimum takes 7-15 s, which a model already exported never needs
        import onnx
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise ModelError("exporting needs the export extra: pip install 'semsearch[export]'") from None

    started = time.time()
    work = _work_folder(_ensure_parent(folder))
    try:
        cfg = read_st_config(Path(source)) if Path(source).is_dir() else _hub_st_config(source)
        log(f"exporting {name} to ONNX (optimize={optimize}) ...")

        def pooled_graph(level: str):
            """The exported graph at an optimum optimisation level, pooling appended."""
            out = work / f"raw-{level}"
            if not out.is_dir():
                try:
                    main_export(source, out, task="feature-extraction", library_name="transformers",
                                optimize=None if level == "none" else level, do_validation=False)
                except (ValueError, OSError, KeyError) as exc:  # not a model transformers knows
                    raise ModelError(f"cannot export {name}: {_first_sentence(exc)}") from None
            graph = append_pooling(onnx.load(out / "model.onnx"), cfg["pooling"], cfg["normalize"])
            return fold_static_shapes(graph)

        graph = pooled_graph(optimize)
        onnx.save(graph, work / VARIANT_FILES["fp32"])
        variants = ["fp32"]
        if quantize == "int8":
            log("quantising to int8 ...")
            quantize_int8(work / VARIANT_FILES["fp32"], work / VARIANT_FILES["int8"])
            variants.append("int8")
        if fp16:  # from the fused O2 graph, whose fused attention and LayerNorm are GPU kernels
            onnx.save(pooled_graph("O2"), work / "fused.onnx")
            log("converting to fp16 ...")
            convert_fp16(work / "fused.onnx", work / VARIANT_FILES["fp16"])
            variants.append("fp16")
        shutil.copy(work / f"raw-{optimize}" / "tokenizer.json", work / "tokenizer.json")

        log("validating against the PyTorch model ...")
        want = reference_embeddings(source, PROBES, cfg)
        manifest = {
            "name": name,
            "source": source,
            "semsearch_version": __version__,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "optimize": optimize,
            "dim": int(want.shape[1]),
            "max_length": cfg["max_length"],
            "pooling": cfg["pooling"],
            "normalize": cfg["normalize"],
            "pooling_in_graph": True,
            "output": OUTPUT,
            "prompts": cfg["prompts"],
            "inputs": [i.name for i in graph.graph.input],
            "variants": {},
        }
        for variant in variants:
            entry = {"file": VARIANT_FILES[variant], "sha256": sha256_file(work / VARIANT_FILES[variant])}
            manifest["variants"][variant] = entry
            entry.update(validate(work, manifest, variant, want))
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for scratch in [*work.glob("raw-*"), work / "fused.onnx"]:
            shutil.rmtree(scratch) if scratch.is_dir() else scratch.unlink(missing_ok=True)
        if folder.exists():  # --force: renamed away whole, never deleted in place (a kill part-way
            old = work.with_name(f"{work.name}-old")  # through left a manifest over missing files)
            folder.rename(old)
            work.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"exported {name} to {folder} in {time.time() - started:.0f}s")
    return folder


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the fp32 graph's MatMul weights, per channel.

    Measured here (benchmarks/README.md): per-tensor weights keep a mean cosine of only
    ~0.95 to fp32; per-channel MatMul weights keep ~0.993. Quantising the plain graph
    rather than optimum's fused O2 graph also quantises the Q/K/V projections (the fused
    Attention op keeps them in fp32): 1.5x fp32 instead of 1.3x. Also quantising
    Gather, or uint8 weights, is slower than fp32 on AVX2. DefaultTensorType lets the
    quantiser pass ops whose types it cannot infer.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations for the GPU; inputs and output stay as they were."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), dst)


def validate(folder: Path, manifest: dict, variant: str, want: np.ndarray) -> dict:
    """Run ``variant`` on the probes; fail the export if it is outside its tolerance.

    fp16 needs a GPU: without one it is left unvalidated and checked on its first load
    on a GPU (Embedder.from_folder records the figures then).
    """
    from .runtime import Session, encode, load_tokenizer

    try:
        session = Session(folder / manifest["variants"][variant]["file"],
                          "auto" if variant == "fp16" else "cpu", variant, output=OUTPUT)
    except ModelError as exc:
        if variant == "fp16":
            return {"validated": False, "note": f"could not run here: {exc.one_line()}"}
        raise
    tokens = encode(load_tokenizer(folder, manifest["max_length"]), PROBES)
    figures = check_variant(variant, session.run(tokens.arrays()), want)
    figures["validated_on"] = session.providers[0]
    if not figures["validated"]:
        raise ModelError(f"{variant} variant fails validation against PyTorch: {figures}")
    return figures


WORK_PREFIX = ".export-"
_WORK_NAME = re.compile(r"\.export-(?P<host>.+)-(?P<pid>\d+)-[^-]+(-old)?")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _work_folder(parent: Path) -> Path:
    """A scratch folder for one export, named for this host and process. Folders that
    exports killed on this host left behind (hundreds of MB to GBs each) are removed
    first: those whose process is gone; a running export's own is left alone."""
    for old in parent.glob(f"{WORK_PREFIX}*"):
        owner = _WORK_NAME.fullmatch(old.name)
        if owner and owner["host"] == _host() and old.is_dir() and not _alive(int(owner["pid"])):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{_host()}-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _first_sentence(exc: BaseException, limit: int = 200) -> str:
    """transformers' errors list every model type it knows (8 KB on one line)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def _ensure_parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _hub_st_config(model_id: str) -> dict:
    """Fetch a hub model once (needs a network) and read its sentence-transformers files."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model_id)
    except Exception as exc:  # offline, no such repo, gated, bad name: huggingface_hub's many errors
        raise ModelNotFound(f"it is neither a local folder nor on the Hugging Face hub as far as this "
                            f"machine can reach ({_first_sentence(exc)})") from None
    return read_st_config(Path(folder))
