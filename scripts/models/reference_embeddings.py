#!/usr/bin/env python3
"""Sentence embeddings of all-MiniLM-L6-v2 computed without llama.cpp: Hugging Face's tokenizer
(tokenizer.json) and a plain numpy forward pass of the BERT encoder over the safetensors weights,
then sentence-transformers' mean pooling and L2 normalisation. The node's vectors are checked
against these (the embedding parity test).

Usage: reference_embeddings.py MODEL_DIR TEXTS.json OUT.json
TEXTS.json is a JSON list of strings; OUT.json gets [{"text", "tokens", "truncated", "vector"}].
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

_erf = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    # BERT's exact GELU (erf form).
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class Encoder:
    def __init__(self, model_dir: Path):
        self.config = json.loads((model_dir / "config.json").read_text())
        self.w = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
        self.max_seq = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def linear(self, name, x):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def tokens(self, text: str):
        ids = self.tokenizer.encode(text, add_special_tokens=True).ids
        truncated = len(ids) > self.max_seq
        if truncated:
            # sentence-transformers truncates to max_seq_length keeping [CLS] ... [SEP].
            ids = ids[: self.max_seq - 1] + [ids[-1]]
        return ids, truncated

    def embed(self, ids):
        c, w = self.config, self.w
        eps = c["layer_norm_eps"]
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        heads = c["num_attention_heads"]
        d = c["hidden_size"] // heads
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q = self.linear(p + "attention.self.query", x).reshape(n, heads, d).transpose(1, 0, 2)
            k = self.linear(p + "attention.self.key", x).reshape(n, heads, d).transpose(1, 0, 2)
            v = self.linear(p + "attention.self.value", x).reshape(n, heads, d).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
            attn = self.linear(p + "attention.output.dense", context)
            x = layer_norm(attn + x, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            hidden = gelu(self.linear(p + "intermediate.dense", x))
            out = self.linear(p + "output.dense", hidden)
            x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit("usage: reference_embeddings.py MODEL_DIR TEXTS.json OUT.json")
    model_dir, texts_path, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    encoder = Encoder(model_dir)
    texts = json.loads(texts_path.read_text(encoding="utf-8"))
    rows = []
    for text in texts:
        ids, truncated = encoder.tokens(text)
        rows.append({"text": text, "tokens": len(ids), "truncated": truncated,
                     "vector": [round(float(v), 7) for v in encoder.embed(ids)]})
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({"model": "all-MiniLM-L6-v2", "rows": rows}), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} ({len(rows)} reference vectors)")


if __name__ == "__main__":
    main()
