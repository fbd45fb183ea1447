"""Run the encoder with ONNX Runtime: the same vectors as torch, faster on a CPU.

The merged encoder (base weights + LoRA adapters) is exported once to ONNX and cached beside the
built encoder, keyed by a hash of everything that determines its weights, so a worker start reuses it.
fp32 gives the torch vectors to within 1e-5 (fused attention and layer-norm kernels make it faster).

int8 rewrites every linear layer as an integer matrix product: weights per output channel, and
activations per token, with a scale computed from that token's own values at run time. ONNX Runtime's
stock dynamic quantization scales activations per tensor, i.e. per batch: a post's scores then depended
on the other posts in its batch, and one outlier token coarsened the whole batch. Per token, a post's
vectors are the same in any batch. A few input channels of each layer carry much larger values than the
rest; as in SmoothQuant (Xiao et al., 2023), part of their range is moved into the weights with a
per-channel factor measured once on the team's intent training texts, so that the other channels keep
their resolution. The word-embedding table (250k rows, most of the fp32 file) is stored as int8 codes with
one scale per block of 32 values, which holds the built-in encoder's 4-bit table exactly: the file shrinks
by 276 MB and a batch worker's peak memory by about 390 MB, and the vectors do not change.
Figures against fp32 are in models/README.md.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)
SMOOTHING_ALPHA = 0.5  # share of an input channel's range moved into the weights; chosen on validation data
CALIBRATION_FILE = "int8-calibration.txt"  # in the artifacts folder: texts that measure each channel's range
CALIBRATION_TEXTS = 256
EXPORT_FORMAT = "5"  # bump when the export or quantization recipe changes: old cache entries are ignored


def export_key(encoder_name: str, artifacts: Path, merged: bool) -> str:
    """A short hash of everything that determines the exported weights: the encoder name, the spec, the
    adapters (when merged), the int8 calibration texts and the export recipe. Both precisions share it."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    adapters = artifacts / "adapters.safetensors"
    calibration = artifacts / CALIBRATION_FILE
    for part in (encoder_name.encode(), (artifacts / "model.json").read_bytes(),
                 adapters.read_bytes() if merged else b"", calibration.read_bytes() if calibration.exists() else b""):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _export(encoder: Any, path: Path) -> None:
    """TextEncoder.forward (token ids and mask in, mean-pooled vectors out) with any batch and length."""
    sample = encoder.tokenize(["eins zwei drei", "one"])
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():  # tracer warnings about the attention mask: the export is checked by tests
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder.eval(), (sample["input_ids"], sample["attention_mask"]), str(path),
                          dynamo=False, opset_version=17, input_names=["input_ids", "attention_mask"],
                          output_names=["vectors"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "vectors": {0: "batch"}})


def save_calibration_texts(artifacts: Path, texts: list[str]) -> None:
    """Keep an even sample of training texts beside the heads: the int8 export measures channel ranges on them."""
    step = max(1, len(texts) // CALIBRATION_TEXTS)
    sample = [" ".join(text.split()) for text in texts[::step][:CALIBRATION_TEXTS]]
    (artifacts / CALIBRATION_FILE).write_text("\n".join(sample) + "\n", encoding="utf-8")


def _calibration_texts(artifacts: Path) -> list[str]:
    """The texts the int8 export measures channel ranges on; int8 cannot be built without them."""
    path = artifacts / CALIBRATION_FILE
    if not path.exists():
        raise FileNotFoundError(f"int8 needs {path} (written by `make train`); set models.int8: false without it")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def _input_ranges(encoder: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """Largest |input| per channel of every linear layer of the torch encoder over the calibration texts."""
    ranges: dict[str, np.ndarray] = {}

    def recorder(name: str) -> Any:
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            largest = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).numpy()
            ranges[name] = np.maximum(ranges[name], largest) if name in ranges else largest
        return record

    hooks = [module.register_forward_pre_hook(recorder(name)) for name, module in encoder.named_modules()
             if isinstance(module, torch.nn.Linear)]
    try:
        encoder.embed(texts)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _quantize(encoder: Any, fp32: Path, int8: Path, calibration: list[str]) -> None:
    """Replace every MatMul with a weight (the linear layers) by its smoothed per-token int8 form."""
    import onnx
    from onnx import numpy_helper
    input_ranges = _input_ranges(encoder, calibration)
    model = onnx.load(str(fp32))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    linear = {node.name: node for node in graph.node if node.op_type == "MatMul" and node.input[1] in initializers}
    weights = {name: numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
               for name, node in linear.items()}
    smoothing = _smoothing(linear, weights, input_ranges)
    added = [numpy_helper.from_array(np.asarray(value, dtype), name) for name, value, dtype in (
        ("q_eps", 1e-8, np.float32), ("q_127", 127.0, np.float32), ("q_one", 1.0, np.float32),
        ("q_zero_point", 128, np.uint8), ("q_flat", [-1], np.int64), ("q_leading_start", [0], np.int64),
        ("q_leading_end", [-1], np.int64))]
    quantized_inputs: dict[str, str] = {}  # query, key and value read one input: quantize it once
    nodes = []
    for node in graph.node:
        if node.name not in linear:
            nodes.append(node)
            continue
        source = node.input[0]
        weight = weights[node.name] * smoothing[source][:, None]
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
        prefix = node.name.replace("/", "_")
        added += [numpy_helper.from_array(np.round(weight / scale).astype(np.int8), f"{prefix}_wq"),
                  numpy_helper.from_array(scale.astype(np.float32), f"{prefix}_ws"),
                  numpy_helper.from_array(np.array([weight.shape[1]], np.int64), f"{prefix}_n")]
        if source not in quantized_inputs:
            q = quantized_inputs[source] = source.replace("/", "_") + "_q"
            added += [numpy_helper.from_array(np.array([-1, weight.shape[0]], np.int64), f"{q}_rows"),
                      numpy_helper.from_array((1.0 / smoothing[source]).astype(np.float32), f"{q}_smooth")]
            nodes += _per_token_quantize(source, q)
        nodes += _integer_matmul(quantized_inputs[source], prefix, node.output[0])
    nodes, embedding_tables = _int8_word_embeddings(nodes, initializers)
    added += embedding_tables
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))  # MatMulIntegerToFloat
    onnx.save(model, str(int8))


def _int8_word_embeddings(nodes: list[Any], initializers: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Replace the word-embedding lookup by an int8 table lookup times one scale per block of 32 values."""
    from onnx import TensorProto, numpy_helper
    from onnx.helper import make_node
    rewritten, tables = [], []
    for node in nodes:
        if not (node.op_type == "Gather" and "word_embeddings" in node.name and node.input[0] in initializers):
            rewritten.append(node)
            continue
        codes, scales = _block_int8(numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32))
        e = "word_embeddings"
        tables += [numpy_helper.from_array(codes, f"{e}_q"), numpy_helper.from_array(scales, f"{e}_scale"),
                   numpy_helper.from_array(np.array([0, 0, scales.shape[1], -1], np.int64), f"{e}_blocks"),
                   numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{e}_flat"),
                   numpy_helper.from_array(np.array([-1], np.int64), f"{e}_last_axis")]
        ids = node.input[1]
        rewritten += [
            make_node("Gather", [f"{e}_q", ids], [f"{e}_rows_q"]),
            make_node("Cast", [f"{e}_rows_q"], [f"{e}_rows"], to=TensorProto.FLOAT),
            make_node("Reshape", [f"{e}_rows", f"{e}_blocks"], [f"{e}_row_blocks"]),
            make_node("Gather", [f"{e}_scale", ids], [f"{e}_row_scales"]),
            make_node("Unsqueeze", [f"{e}_row_scales", f"{e}_last_axis"], [f"{e}_block_scales"]),
            make_node("Mul", [f"{e}_row_blocks", f"{e}_block_scales"], [f"{e}_scaled"]),
            make_node("Reshape", [f"{e}_scaled", f"{e}_flat"], [node.output[0]])]
    return rewritten, tables


def _block_int8(table: np.ndarray, block: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes [rows, cols] and fp32 scales [rows, cols / block].

    The built-in encoder's table is 4-bit blocks of 32 (code -8..7 times an fp16 scale, see encoder_build):
    where a block's values are exact multiples of an fp16 max/n for some n <= 8, those codes are kept, so
    the lookup is lossless; any other block (another encoder) is rounded to max/127 steps.
    """
    block = block if table.shape[1] % block == 0 else table.shape[1]
    codes = np.empty(table.shape, np.int8)
    scales = np.empty((table.shape[0], table.shape[1] // block), np.float32)
    rows = 8192  # converted in slices: the first start's memory peak stays low
    for start in range(0, table.shape[0], rows):
        blocks = table[start:start + rows].reshape(-1, scales.shape[1], block)
        largest = np.maximum(np.abs(blocks).max(axis=2, keepdims=True), 1e-12)
        chosen = largest / 127.0
        for steps in range(1, 9):  # 4-bit codes: the largest value is 1 to 8 steps of its block's fp16 scale
            scale = (largest / steps).astype(np.float16).astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):  # a scale below fp16's range is 0: not exact
                exact = (np.round(blocks / scale) * scale == blocks).all(axis=2, keepdims=True)
            chosen = np.where(exact, scale, chosen)
        codes[start:start + rows] = np.round(blocks / chosen).reshape(-1, table.shape[1])
        scales[start:start + rows] = chosen[..., 0]
    return codes, scales


def _smoothing(linear: dict[str, Any], weights: dict[str, np.ndarray],
               input_ranges: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per input tensor: s_j = max|x_j|^a / max|w_j|^(1-a); x_j / s_j is quantized, and row j of W is scaled by s_j.

    A graph MatMul is named after its torch Linear: '/model/encoder/layer.0/attention/self/query/MatMul'.
    """
    ranges: dict[str, np.ndarray] = {}
    weight_rows: dict[str, np.ndarray] = {}
    for name, node in linear.items():
        module = name.strip("/").replace("/", ".").removesuffix(".MatMul")
        if module not in input_ranges:
            raise RuntimeError(f"int8 export: no torch layer matches the graph node {name}")
        source = node.input[0]
        ranges[source] = input_ranges[module]
        rows = np.abs(weights[name]).max(axis=1)
        weight_rows[source] = np.maximum(weight_rows[source], rows) if source in weight_rows else rows
    return {source: (np.maximum(ranges[source], 1e-5) ** SMOOTHING_ALPHA
                     / np.maximum(weight_rows[source], 1e-5) ** (1 - SMOOTHING_ALPHA))
            for source in ranges}


def _per_token_quantize(x: str, q: str) -> list[Any]:
    """x [..., K] float -> q_x8 [rows, K] uint8 (zero point 128), q_s [rows, 1]: per row, scale = max|x / s| / 127."""
    from onnx import TensorProto
    from onnx.helper import make_node, make_tensor
    return [
        make_node("Shape", [x], [f"{q}_shape"]),
        make_node("Slice", [f"{q}_shape", "q_leading_start", "q_leading_end"], [f"{q}_leading"]),
        make_node("Reshape", [x, f"{q}_rows"], [f"{q}_flat"]),
        make_node("Mul", [f"{q}_flat", f"{q}_smooth"], [f"{q}_x"]),
        make_node("Abs", [f"{q}_x"], [f"{q}_abs"]),
        make_node("ReduceMax", [f"{q}_abs"], [f"{q}_max"], axes=[1], keepdims=1),
        make_node("Max", [f"{q}_max", "q_eps"], [f"{q}_range"]),
        make_node("Div", [f"{q}_range", "q_127"], [f"{q}_s"]),
        make_node("Reshape", [f"{q}_s", "q_flat"], [f"{q}_row_scales"]),
        make_node("Shape", [f"{q}_row_scales"], [f"{q}_row_count"]),
        make_node("ConstantOfShape", [f"{q}_row_count"], [f"{q}_row_zero_points"],
                  value=make_tensor("zero_point", TensorProto.UINT8, [1], [128])),  # uint8 x int8: the fast kernel
        make_node("QuantizeLinear", [f"{q}_x", f"{q}_row_scales", f"{q}_row_zero_points"], [f"{q}_x8"], axis=0),
    ]


def _integer_matmul(q: str, prefix: str, out: str) -> list[Any]:
    """Integer product scaled back per weight channel (one fused kernel), then per token; original shape."""
    from onnx.helper import make_node
    return [
        make_node("MatMulIntegerToFloat", [f"{q}_x8", f"{prefix}_wq", "q_one", f"{prefix}_ws", "q_zero_point"],
                  [f"{prefix}_channels"], domain="com.microsoft"),
        make_node("Mul", [f"{prefix}_channels", f"{q}_s"], [f"{prefix}_rows_scaled"]),
        make_node("Concat", [f"{q}_leading", f"{prefix}_n"], [f"{prefix}_shape"], axis=0),
        make_node("Reshape", [f"{prefix}_rows_scaled", f"{prefix}_shape"], [out]),
    ]


def _folder(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir).expanduser() / "onnx"


def _path(cache_dir: str | os.PathLike[str], key: str, int8: bool) -> Path:
    return _folder(cache_dir) / f"encoder-{key}-{'int8' if int8 else 'fp32'}.onnx"


def stale_exports(cache_dir: str | os.PathLike[str], key: str) -> list[Path]:
    """Exports of other model versions (about 600 MB each) and partial files of processes that died mid-export.

    They are never removed at start: workers of two model versions may share a cache during an upgrade.
    `triage prune-cache` removes them.
    """
    folder = _folder(cache_dir)
    stale = []
    for path in sorted(folder.glob("encoder-*.onnx*")) if folder.is_dir() else []:
        if path.name.endswith(".partial"):
            writer = path.name.split(".")[-2]
            if not (writer.isdigit() and _process_alive(int(writer))):
                stale.append(path)
        elif not path.name.startswith(f"encoder-{key}-"):
            stale.append(path)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def cached_model(cache_dir: str | os.PathLike[str], key: str, int8: bool) -> Path | None:
    """The exported file if an earlier start made it: then the torch weights need not be loaded at all."""
    path = _path(cache_dir, key, int8)
    return path if path.exists() else None


def export_model(encoder: Any, cache_dir: str | os.PathLike[str], key: str, int8: bool, artifacts: Path) -> Path:
    """Export the loaded (merged) torch encoder to the cache, quantized when int8; returns the file.

    int8 reads its calibration texts from `artifacts` here, so a start with a cached export never reads them.
    """
    fp32, wanted = _path(cache_dir, key, False), _path(cache_dir, key, int8)
    fp32.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the encoder to ONNX (once)", extra={"fields": {"into": str(wanted)}})
    if not fp32.exists():
        partial = _partial(fp32)
        _export(encoder, partial)
        partial.rename(fp32)
    if int8:
        partial = _partial(wanted)
        _quantize(encoder, fp32, partial, _calibration_texts(artifacts))
        partial.rename(wanted)
    return wanted


def _partial(path: Path) -> Path:
    """A per-process temporary name: workers starting together each write their own, then rename atomically."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


def session(path: Path, threads: int) -> Any:
    """An inference session with all graph optimizations on `threads` intra-op threads that do not spin."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the pipeline's own threads (Beam, Kafka and
    # Elasticsearch clients) share the same few cores, and spinning starves them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
