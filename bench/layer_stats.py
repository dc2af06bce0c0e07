#!/usr/bin/env python3
"""Layer statistics of a real BERT encoder's first blocks, for `prunus bench layerwise --stats`.

Runs the dense encoder (numpy, f64) of a Hugging Face BERT model folder such as
all-MiniLM-L6-v2 on calibration sentences (one per sample, tokenised with the
folder's tokenizer.json) and records, for every linear layer of the first
--blocks blocks, the statistics prunus's layer-wise methods need: the rows
(tokens) seen, the per-column sums of squares and the Gram matrix X^T X of
the layer's inputs. Writes one safetensors file with, per layer NAME,
`NAME.weight` (f32 [out, in], as in the checkpoint), `NAME.gram` (f64 [in, in]),
`NAME.sum_squares` (f64 [in]) and `NAME.rows` (i64 [1]).

The statistics are those of the dense model (every block fed by the dense
block before it), which is what one layer's comparison needs; the sequential
recipe (each block fed by the pruned one) belongs to the model-level pruning.

Needs: pip install numpy tokenizers safetensors. Example:

    python3 bench/layer_stats.py ../shared/data/minilm-l6-v2 \
        ../shared/data/text/python-docstrings.txt --samples 512 --blocks 1 -o minilm-stats.safetensors
    prunus bench layerwise --stats minilm-stats.safetensors
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    # BERT's "gelu": the exact erf form.
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


class Stats:
    def __init__(self, cols):
        self.rows = 0
        self.sum_squares = np.zeros(cols)
        self.gram = np.zeros((cols, cols))

    def push(self, x):
        self.rows += x.shape[0]
        self.sum_squares += (x * x).sum(axis=0)
        self.gram += x.T @ x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a BERT model folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("text", help="calibration text, one sentence per line")
    ap.add_argument("--samples", type=int, default=512, help="the first N non-empty lines")
    ap.add_argument("--blocks", type=int, default=1, help="blocks whose layers are recorded")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    config = json.load(open(os.path.join(args.model, "config.json")))
    if config.get("model_type") != "bert":
        sys.exit(f"error: {args.model} is a {config.get('model_type')!r} model, not bert")
    tok_path = os.path.join(args.model, "tokenizer.json")
    if not os.path.exists(tok_path):
        sys.exit(f"error: {args.model} has no tokenizer.json")
    tokenizer = Tokenizer.from_file(tok_path)
    tokenizer.no_padding()
    tokenizer.enable_truncation(args.max_tokens)
    lines = [l.strip() for l in open(args.text, encoding="utf-8") if l.strip()][: args.samples]
    if not lines:
        sys.exit(f"error: {args.text} has no non-empty line")

    raw = load_file(os.path.join(args.model, "model.safetensors"))
    t = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in raw.items()}
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in t else ""
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    dh = hidden // heads
    names = ["attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense"]
    stats = {}
    for b in range(args.blocks):
        for n in names:
            w = t[f"{prefix}encoder.layer.{b}.{n}.weight"]
            stats[f"{prefix}encoder.layer.{b}.{n}"] = Stats(w.shape[1])

    def linear(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    for line in lines:
        ids = tokenizer.encode(line).ids
        h = (t[prefix + "embeddings.word_embeddings.weight"][ids]
             + t[prefix + "embeddings.position_embeddings.weight"][: len(ids)]
             + t[prefix + "embeddings.token_type_embeddings.weight"][0])
        h = layer_norm(h, t[prefix + "embeddings.LayerNorm.weight"], t[prefix + "embeddings.LayerNorm.bias"], eps)
        for b in range(args.blocks):
            p = f"{prefix}encoder.layer.{b}."
            for n in names[:3]:
                stats[p + n].push(h)
            q, k, v = (linear(h, p + n) for n in names[:3])
            split = lambda m: m.reshape(len(ids), heads, dh).transpose(1, 0, 2)
            q, k, v = split(q), split(k), split(v)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(len(ids), hidden)
            stats[p + names[3]].push(ctx)
            a = layer_norm(linear(ctx, p + names[3]) + h, t[p + "attention.output.LayerNorm.weight"],
                           t[p + "attention.output.LayerNorm.bias"], eps)
            stats[p + names[4]].push(a)
            mid = gelu(linear(a, p + names[4]))
            stats[p + names[5]].push(mid)
            h = layer_norm(linear(mid, p + names[5]) + a, t[p + "output.LayerNorm.weight"],
                           t[p + "output.LayerNorm.bias"], eps)

    out = {}
    for name, s in stats.items():
        out[name + ".weight"] = np.ascontiguousarray(raw[name + ".weight"])
        out[name + ".gram"] = s.gram
        out[name + ".sum_squares"] = s.sum_squares
        out[name + ".rows"] = np.array([s.rows], dtype=np.int64)
    tmp = args.output + ".tmp"
    save_file(out, tmp, metadata={"model": os.path.basename(os.path.normpath(args.model)),
                                  "text": os.path.basename(args.text),
                                  "samples": str(len(lines))})
    os.replace(tmp, args.output)
    tokens = next(iter(stats.values())).rows
    print(f"{len(stats)} layers, {len(lines)} sentences, {tokens} tokens -> {args.output}")


if __name__ == "__main__":
    main()
