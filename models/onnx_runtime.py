"""Run the encoder with ONNX Runtime: the same vectors as torch, faster on a CPU.

The merged encoder (base weights + LoRA adapters) is exported once to ONNX and cached beside the
built encoder, keyed by a hash of everything that determines its weights, so a worker start reuses it.
fp32 gives the torch vectors to within 1e-5 (fused attention and layer-norm kernels make it faster).
int8 quantizes the weights of the linear layers dynamically, except the feed-forward output
projections: their inputs (GELU outputs) have outliers that per-tensor activation scales cannot hold,
and quantizing them too costs several points (models/README.md has the figures).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
EXPORT_FORMAT = "1"  # bump when the export or quantization recipe changes: old cache entries are ignored


def cache_key(parts: list[bytes]) -> str:
    """A short hash of the encoder name, the adapter and spec files, the precision and the export recipe."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _export(encoder: Any, path: Path) -> None:
    """TextEncoder.forward (token ids and mask in, mean-pooled vectors out) with any batch and length."""
    sample = encoder.tokenize(["eins zwei drei", "one"])
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(encoder.eval(), (sample["input_ids"], sample["attention_mask"]), str(path),
                      dynamo=False, opset_version=17, input_names=["input_ids", "attention_mask"],
                      output_names=["vectors"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "vectors": {0: "batch"}})


def _quantize(fp32: Path, int8: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    matmuls = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
               if node.op_type == "MatMul"]
    keep_fp32 = [name for name in matmuls
                 if name.endswith(("/self/MatMul", "/self/MatMul_1"))  # attention scores: activations only
                 or (name.endswith("/output/dense/MatMul") and "/attention/" not in name)]  # feed-forward out
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs a line per tensor on the root logger
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)
    finally:
        root.setLevel(level)


def _path(cache_dir: str | os.PathLike[str], key: str, int8: bool) -> Path:
    return Path(cache_dir).expanduser() / "onnx" / f"encoder-{key}-{'int8' if int8 else 'fp32'}.onnx"


def cached_model(cache_dir: str | os.PathLike[str], key: str, int8: bool) -> Path | None:
    """The exported file if an earlier start made it: then the torch weights need not be loaded at all."""
    path = _path(cache_dir, key, int8)
    return path if path.exists() else None


def export_model(encoder: Any, cache_dir: str | os.PathLike[str], key: str, int8: bool) -> Path:
    """Export the loaded (merged) torch encoder to the cache, quantized when int8; returns the file."""
    fp32, wanted = _path(cache_dir, key, False), _path(cache_dir, key, int8)
    fp32.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the encoder to ONNX (once)", extra={"fields": {"into": str(wanted)}})
    if not fp32.exists():
        partial = _partial(fp32)
        _export(encoder, partial)
        partial.rename(fp32)
    if int8:
        partial = _partial(wanted)
        _quantize(fp32, partial)
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
