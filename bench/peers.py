#!/usr/bin/env python3
"""Time numpy on the workload of `prunus bench select`.

Builds the same split of PARAMS float32 weights into TENSORS matrices as
prunus-lab's `layer_specs` (same shapes, Kaiming-scaled Gaussian values from
numpy's generator, so the same distribution but not the same bits), then
times, REPEAT times after one warm-up:

  floor      one read pass over all weights (np.sum of every tensor);
  prune      global magnitude pruning the way a Python user writes it:
             np.abs + np.concatenate of all scores, np.partition to the k-th
             smallest for the threshold, then one boolean mask per tensor
             (abs(w) > threshold). Ties at the threshold are all pruned, so
             the count can exceed k = round(S * N); it is reported;
  partition  np.partition alone on the concatenated scores.

Prints medians and minimums; --json writes a report in prunus' long-format
schema (protocol bench-select, method numpy). numpy runs these on one thread.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

# The parts of one transformer block, as in prunus-lab's synthetic.rs:
# (name, relative size, rows per column of the ideal aspect).
BLOCK = [
    ("attn.q", 1, 1.0),
    ("attn.k", 1, 1.0),
    ("attn.v", 1, 1.0),
    ("attn.o", 1, 1.0),
    ("mlp.up", 4, 4.0),
    ("mlp.down", 4, 0.25),
]
GRANULE = 64


def layer_specs(params, tensors):
    """(name, (rows, cols), std) per tensor; sizes sum exactly to params."""
    if tensors < 1:
        raise ValueError(f"tensors = {tensors} is invalid: it must be at least 1")
    if params < tensors:
        raise ValueError(
            f"params = {params} is invalid: at least the number of tensors ({tensors})"
        )
    granule = GRANULE if params >= GRANULE * tensors else 1
    units, rest = divmod(params, granule)
    weights = [BLOCK[i % len(BLOCK)][1] for i in range(tensors)]
    total = sum(weights)
    spare = units - tensors
    sizes = [1 + spare * w // total for w in weights]
    left = units - sum(sizes)
    for i in range(left):
        sizes[i] += 1
    sizes = [s * granule for s in sizes]
    sizes[-1] += rest
    assert sum(sizes) == params
    specs = []
    for i, size in enumerate(sizes):
        part, _, aspect = BLOCK[i % len(BLOCK)]
        cols = nearest_divisor(size, math.sqrt(size / aspect))
        specs.append((f"blocks.{i // len(BLOCK)}.{part}.weight", (size // cols, cols), math.sqrt(2.0 / cols)))
    return specs


def nearest_divisor(n, target):
    """The divisor of n closest to target on a log scale (first found wins ties)."""
    best = 1
    dist = lambda d: abs(math.log(d / target))
    i = 1
    while i <= n // i:
        if n % i == 0:
            for d in (i, n // i):
                if dist(d) < dist(best):
                    best = d
        i += 1
    return best


def prunus_version():
    """The workspace version from ../Cargo.toml, so reports compare by version."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Cargo.toml")
    try:
        import tomllib
        with open(path, "rb") as f:
            return tomllib.load(f)["workspace"]["package"]["version"]
    except Exception:
        return "unknown"


def median_min(xs):
    return statistics.median(xs), min(xs)


def peak_rss_mib():
    # ru_maxrss is KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def row(method, metric, values, sparsity):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"method": method, "sparsity": sparsity, "metric": metric,
            "values": values, "mean": mean, "std": std}


def write_json_atomic(path, obj):
    """Temp file in the same directory, fsync, rename: never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=f".{os.path.basename(path)}.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def add_workload_arguments(p, default_params):
    """The flags every peer shares with `prunus bench select`."""
    p.add_argument("--params", type=int, default=default_params, metavar="N", help=f"total float32 weights (default {default_params})")
    p.add_argument("--tensors", type=int, default=50, metavar="L", help="number of tensors (default 50)")
    p.add_argument("--sparsity", type=float, default=0.9, metavar="S", help="fraction to prune, in [0, 1] (default 0.9)")
    p.add_argument("--repeat", type=int, default=5, metavar="R", help="timed repetitions after one warm-up (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write a JSON report")


def fail(msg):
    """Prints an error and exits with status 2, like prunus."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def checked_workload(a):
    """Checks the shared flags; returns the layer specs."""
    if not 0.0 <= a.sparsity <= 1.0:
        fail(f"sparsity {a.sparsity} is outside [0, 1]: give the fraction of weights to remove, e.g. 0.9")
    if a.repeat < 1:
        fail(f"repeat = {a.repeat} is invalid: it must be at least 1")
    if a.json and not os.path.isdir(os.path.dirname(os.path.abspath(a.json))):
        fail(f"--json = {a.json} is invalid: a file in an existing directory")
    try:
        return layer_specs(a.params, a.tensors)
    except ValueError as e:
        fail(str(e))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(p, 100_000_000)
    a = p.parse_args()
    specs = checked_workload(a)
    try:
        import numpy as np
    except ImportError:
        fail("numpy is not installed; install it with: python3 -m pip install numpy")

    started = time.perf_counter()
    n = a.params
    k = int(math.floor(a.sparsity * n + 0.5))  # round half away from zero, as prunus
    print(f"generating {n} float32 weights in {a.tensors} tensors (seed {a.seed})...", file=sys.stderr)
    t = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    ws = []
    for _, shape, std in specs:
        w = rng.standard_normal(shape, dtype=np.float32)
        w *= np.float32(std)
        ws.append(w)
    generate_s = time.perf_counter() - t
    print(f"generated in {generate_s:.2f} s", file=sys.stderr)

    def floor():
        s = 0.0
        for w in ws:
            s += float(np.sum(w))
        return s

    def prune():
        scores = np.concatenate([np.abs(w).ravel() for w in ws])
        if k == 0:
            return [np.ones(w.shape, dtype=bool) for w in ws]
        threshold = np.partition(scores, k - 1)[k - 1]
        return [np.abs(w) > threshold for w in ws]

    scores = np.concatenate([np.abs(w).ravel() for w in ws])

    def partition():
        if k > 0:
            np.partition(scores, k - 1)

    def timed(f):
        t = time.perf_counter()
        r = f()
        return (time.perf_counter() - t) * 1e3, r

    floor_ms, prune_ms, part_ms, pruned = [], [], [], []
    for r in range(a.repeat + 1):
        f_ms, _ = timed(floor)
        p_ms, masks = timed(prune)
        q_ms, _ = timed(partition)
        count = sum(m.size - int(np.count_nonzero(m)) for m in masks)
        del masks
        label = "warm-up" if r == 0 else f"repeat {r}/{a.repeat}"
        print(f"{label}: floor {f_ms:.1f} ms, prune {p_ms:.1f} ms, partition {q_ms:.1f} ms", file=sys.stderr)
        if r > 0:
            floor_ms.append(f_ms)
            prune_ms.append(p_ms)
            part_ms.append(q_ms)
            pruned.append(count)
    del scores
    peak = peak_rss_mib()

    gbps = lambda ms: n * 4 / (ms * 1e-3) / 1e9
    fm, fmin = median_min(floor_ms)
    pm, pmin = median_min(prune_ms)
    qm, qmin = median_min(part_ms)
    exact = all(c == k for c in pruned)
    print(f"numpy {np.__version__} (python {platform.python_version()}): {n} float32 weights in "
          f"{a.tensors} tensors, sparsity {a.sparsity}, {a.repeat} repeat(s) after a warm-up")
    print(f"{'':<36}{'median':>13}{'min':>13}")
    print(f"{'floor (np.sum, one pass)':<36}{fm:>10.2f} ms{fmin:>10.2f} ms")
    print(f"{'floor bandwidth':<36}{gbps(fm):>8.2f} GB/s{gbps(fmin):>8.2f} GB/s")
    print(f"{'prune (abs+concat+partition+masks)':<36}{pm:>10.2f} ms{pmin:>10.2f} ms")
    print(f"{'np.partition alone':<36}{qm:>10.2f} ms{qmin:>10.2f} ms")
    print(f"{'ratio prune / floor':<36}{pm / fm:>12.2f}x{pmin / fmin:>12.2f}x")
    print(f"{'pruned':<36}{pruned[0]} (k = round({a.sparsity} * {n}) = {k}; "
          f"{'exact' if exact else 'NOT exact: ties at the threshold'})")
    print(f"{'peak memory (ru_maxrss)':<36}{peak:.1f} MiB")

    if a.json:
        report = {
            "protocol": "bench-select",
            "prunus_version": prunus_version(),
            "dataset": "synthetic",
            "seeds": [a.seed],
            "config": {"params": n, "tensors": a.tensors, "sparsity": a.sparsity,
                       "scope": "global", "importance": "magnitude",
                       "backend": f"numpy {np.__version__}", "threads": 1, "repeat": a.repeat},
            "rows": [
                row("numpy", "floor_ms", floor_ms, a.sparsity),
                row("numpy", "prune_ms", prune_ms, a.sparsity),
                row("numpy", "partition_ms", part_ms, a.sparsity),
                row("numpy", "ratio", [p / f for p, f in zip(prune_ms, floor_ms)], a.sparsity),
                row("numpy", "pruned", [float(c) for c in pruned], a.sparsity),
                row("numpy", "exact", [1.0 if c == k else 0.0 for c in pruned], a.sparsity),
                row("numpy", "floor_gb_s", [gbps(ms) for ms in floor_ms], a.sparsity),
                row("numpy", "peak_rss_mb", [peak], a.sparsity),
            ],
            "timing_s": {"generate": generate_s, "total": time.perf_counter() - started},
        }
        write_json_atomic(a.json, report)
        print(f"wrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
