"""Loads a pruned sentence-transformers folder (and the dense one) in sentence-transformers and compares embeddings.

Checks that a folder prunus wrote loads where the input loaded, and that
sentence-transformers' own embeddings agree with what `prunus eval` reports:
the mean cosine between the pruned and the dense embedding of each sentence,
on the lines after the first `--skip` (the calibration lines).

Usage: python bench/sentence_transformers_check.py PRUNED_DIR DENSE_DIR TEXT [--skip 512] [--lines 2099]
"""

import argparse

import sentence_transformers
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pruned")
    p.add_argument("dense")
    p.add_argument("text")
    p.add_argument("--skip", type=int, default=512)
    p.add_argument("--lines", type=int, default=0)
    a = p.parse_args()
    lines = [l.strip() for l in open(a.text, encoding="utf-8") if l.strip()][a.skip:]
    if a.lines:
        lines = lines[: a.lines]
    pruned = sentence_transformers.SentenceTransformer(a.pruned, device="cpu")
    dense = sentence_transformers.SentenceTransformer(a.dense, device="cpu")
    x = pruned.encode(lines, convert_to_tensor=True, normalize_embeddings=True)
    y = dense.encode(lines, convert_to_tensor=True, normalize_embeddings=True)
    cos = (x * y).sum(1)
    params = sum(t.numel() for t in pruned.parameters())
    dense_params = sum(t.numel() for t in dense.parameters())
    print(
        f"{a.pruned}: loaded in sentence-transformers {sentence_transformers.__version__}; "
        f"{params} parameters (dense {dense_params}); {len(lines)} sentences: mean cosine to the "
        f"dense model {cos.mean().item():.4f} (smallest {cos.min().item():.4f})"
    )


if __name__ == "__main__":
    with torch.no_grad():
        main()
