#!/usr/bin/env python3
"""Time PyTorch on the workload of `prunus bench select`.

Builds the same split of PARAMS float32 weights into TENSORS matrices as
prunus-lab's `layer_specs` (imported from peers.py: same shapes,
Kaiming-scaled Gaussian values from a torch Generator created on the device,
so the same distribution but not the same bits), then times on DEVICE,
REPEAT times after one warm-up, synchronising the device around every timed
region:

  floor      one read pass over all weights (the sum of every tensor);
  prune      global magnitude pruning the way a PyTorch user writes it:
             torch.cat of every abs(w).flatten(), torch.kthvalue to the k-th
             smallest for the threshold, then one boolean mask per tensor
             (abs(w) > threshold). Ties at the threshold are all pruned, so
             the count can exceed k = round(S * N); it is reported;
  kthvalue   torch.kthvalue alone on the concatenated scores;
  global_unstructured
             torch.nn.utils.prune.global_unstructured with L1Unstructured and
             amount = k on Linear-like modules holding the weights (it
             concatenates the scores and takes torch.topk of the k smallest,
             so it prunes exactly k; it also stores a float mask and the
             masked weight per module). Skipped with --no-global-unstructured
             or when it runs out of memory.

Prints medians and minimums; --json writes a report in prunus' long-format
schema (protocol bench-select, method torch). On CUDA it also reports the peak
device memory of each method (torch.cuda.max_memory_allocated, weights
included). CPU runs use torch's intra-op threads (set OMP_NUM_THREADS).
"""

import argparse
import math
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import (  # noqa: E402
    add_workload_arguments,
    checked_workload,
    fail,
    median_min,
    peak_rss_mib,
    prunus_version,
    row,
    write_json_atomic,
)

MIB = 1024 * 1024


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(p, 1_000_000_000)
    p.add_argument("--device", metavar="DEV", help="torch device: cpu, cuda or cuda:I (default cuda if available, else cpu)")
    p.add_argument("--no-global-unstructured", action="store_true", help="skip torch.nn.utils.prune.global_unstructured")
    a = p.parse_args()
    specs = checked_workload(a)
    try:
        import torch
        from torch.nn.utils import prune as torch_prune
    except ImportError:
        fail("torch is not installed; install it with: python3 -m pip install torch")
    import_rss = peak_rss_mib()

    try:
        device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        fail(f"--device = {a.device} is invalid: {e}")
    if device.type not in ("cpu", "cuda"):
        fail(f"--device = {a.device} is invalid: only cpu and cuda devices are supported")
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            fail(f"--device = {a.device} is invalid: torch {torch.__version__} sees no CUDA device")
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            fail(f"--device = {a.device} is invalid: there are {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(device)
        device_name = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        device_name = f"cpu ({threads} thread{'' if threads == 1 else 's'})"

    def sync():
        """Wait for the device's queued work; a no-op on the CPU."""
        if cuda:
            torch.cuda.synchronize(device)

    started = time.perf_counter()
    n = a.params
    k = int(math.floor(a.sparsity * n + 0.5))  # round half away from zero, as prunus
    print(f"generating {n} float32 weights in {a.tensors} tensors on {device} (seed {a.seed})...", file=sys.stderr)
    t = time.perf_counter()
    gen = torch.Generator(device=device)
    gen.manual_seed(a.seed)
    ws = [torch.randn(shape, generator=gen, dtype=torch.float32, device=device).mul_(std) for _, shape, std in specs]
    sync()
    generate_s = time.perf_counter() - t
    print(f"generated in {generate_s:.2f} s", file=sys.stderr)

    class Holder(torch.nn.Module):
        """A Linear-like module whose `weight` shares the storage of one weight tensor."""

        def __init__(self, w):
            super().__init__()
            self.weight = torch.nn.Parameter(w, requires_grad=False)

    def floor():
        """One read pass: the sum of every tensor, left on the device."""
        return torch.stack([w.sum() for w in ws]).sum()

    def scores():
        """All weights' magnitudes in one flat tensor."""
        return torch.cat([w.abs().flatten() for w in ws])

    def prune():
        """Global magnitude pruning as a PyTorch user writes it; the keep masks."""
        s = scores()
        if k == 0:
            return [torch.ones_like(w, dtype=torch.bool) for w in ws]
        threshold = torch.kthvalue(s, k).values
        del s
        return [w.abs() > threshold for w in ws]

    def global_unstructured(holders):
        """torch's own global pruning; leaves a weight_mask buffer on each holder."""
        # amount as an int: a float would be rounded by prune's own rule, not prunus'.
        torch_prune.global_unstructured([(h, "weight") for h in holders],
                                        pruning_method=torch_prune.L1Unstructured, amount=k)

    def timed(f, *args):
        """(milliseconds, peak device MiB or None, result) of f(*args), synchronised."""
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        t = time.perf_counter()
        r = f(*args)
        sync()
        ms = (time.perf_counter() - t) * 1e3
        return ms, torch.cuda.max_memory_allocated(device) / MIB if cuda else None, r

    def zeros(masks):
        """How many entries of the masks are zero (pruned)."""
        return sum(m.numel() - int(torch.count_nonzero(m)) for m in masks)

    oom = torch.cuda.OutOfMemoryError  # also what the CPU allocator raises
    run_gu = not a.no_global_unstructured
    floor_ms, prune_ms, kth_ms, gu_ms, pruned, gu_pruned = [], [], [], [], [], []
    peaks = {}  # method -> peak device MiB, on CUDA only
    for r in range(a.repeat + 1):
        f_ms, _, _ = timed(floor)
        p_ms, p_peak, masks = timed(prune)
        count = zeros(masks)
        del masks
        s = scores()
        q_ms, q_peak, _ = timed(torch.kthvalue, s, k) if k > 0 else timed(lambda: None)
        del s
        line = f"floor {f_ms:.1f} ms, prune {p_ms:.1f} ms, kthvalue {q_ms:.1f} ms"
        g_ms = g_peak = None
        if run_gu:
            holders = [Holder(w) for w in ws]
            try:
                g_ms, g_peak, _ = timed(global_unstructured, holders)
                g_count = zeros(h.weight_mask for h in holders)
                line += f", global_unstructured {g_ms:.1f} ms"
            except oom as e:
                run_gu = False
                gu_ms.clear()
                gu_pruned.clear()
                print(f"global_unstructured skipped: out of memory ({str(e).splitlines()[0]})", file=sys.stderr)
            del holders
            if cuda:
                torch.cuda.empty_cache()
        label = "warm-up" if r == 0 else f"repeat {r}/{a.repeat}"
        print(f"{label}: {line}", file=sys.stderr)
        if r > 0:
            floor_ms.append(f_ms)
            prune_ms.append(p_ms)
            kth_ms.append(q_ms)
            pruned.append(count)
            if run_gu:
                gu_ms.append(g_ms)
                gu_pruned.append(g_count)
        if cuda:
            for method, mib in (("prune", p_peak), ("kthvalue", q_peak), ("global_unstructured", g_peak)):
                if mib is not None:
                    peaks[method] = max(peaks.get(method, 0.0), mib)
    peak = peak_rss_mib()
    if not run_gu:
        peaks.pop("global_unstructured", None)

    gbps = lambda ms: n * 4 / (ms * 1e-3) / 1e9
    fm, fmin = median_min(floor_ms)
    pm, pmin = median_min(prune_ms)
    qm, qmin = median_min(kth_ms)
    exact = all(c == k for c in pruned)
    exactness = lambda ok: "exact" if ok else "NOT exact: ties at the threshold"
    col = 44
    print(f"torch {torch.__version__} on {device_name} (python {platform.python_version()}): {n} float32 weights in "
          f"{a.tensors} tensors, sparsity {a.sparsity}, {a.repeat} repeat(s) after a warm-up")
    print(f"{'':<{col}}{'median':>13}{'min':>13}")
    print(f"{'floor (sum of every tensor, one pass)':<{col}}{fm:>10.2f} ms{fmin:>10.2f} ms")
    print(f"{'floor bandwidth':<{col}}{gbps(fm):>8.2f} GB/s{gbps(fmin):>8.2f} GB/s")
    print(f"{'prune (abs+cat+kthvalue+masks)':<{col}}{pm:>10.2f} ms{pmin:>10.2f} ms")
    print(f"{'torch.kthvalue alone':<{col}}{qm:>10.2f} ms{qmin:>10.2f} ms")
    if run_gu:
        gm, gmin = median_min(gu_ms)
        print(f"{'prune.global_unstructured (L1, topk)':<{col}}{gm:>10.2f} ms{gmin:>10.2f} ms")
    print(f"{'ratio prune / floor':<{col}}{pm / fm:>12.2f}x{pmin / fmin:>12.2f}x")
    if run_gu:
        print(f"{'ratio global_unstructured / floor':<{col}}{gm / fm:>12.2f}x{gmin / fmin:>12.2f}x")
    print(f"{'pruned (kthvalue masks)':<{col}}{pruned[0]} (k = round({a.sparsity} * {n}) = {k}; {exactness(exact)})")
    if run_gu:
        print(f"{'pruned (global_unstructured)':<{col}}{gu_pruned[0]} ({exactness(all(c == k for c in gu_pruned))})")
    elif not a.no_global_unstructured:
        print(f"{'prune.global_unstructured':<{col}}skipped: out of memory")
    for method, mib in peaks.items():
        print(f"{f'peak device memory, {method}':<{col}}{mib:.1f} MiB (weights {n * 4 / MIB:.1f} MiB)")
    print(f"{'peak host memory (ru_maxrss)':<{col}}{peak:.1f} MiB ({import_rss:.1f} MiB after importing torch)")

    if a.json:
        rows = [
            row("torch", "floor_ms", floor_ms, a.sparsity),
            row("torch", "prune_ms", prune_ms, a.sparsity),
            row("torch", "kthvalue_ms", kth_ms, a.sparsity),
            row("torch", "ratio", [p / f for p, f in zip(prune_ms, floor_ms)], a.sparsity),
            row("torch", "pruned", [float(c) for c in pruned], a.sparsity),
            row("torch", "exact", [1.0 if c == k else 0.0 for c in pruned], a.sparsity),
            row("torch", "floor_gb_s", [gbps(ms) for ms in floor_ms], a.sparsity),
        ]
        if run_gu:
            rows += [
                row("torch", "global_unstructured_ms", gu_ms, a.sparsity),
                row("torch", "global_unstructured_ratio", [g / f for g, f in zip(gu_ms, floor_ms)], a.sparsity),
                row("torch", "global_unstructured_pruned", [float(c) for c in gu_pruned], a.sparsity),
                row("torch", "global_unstructured_exact", [1.0 if c == k else 0.0 for c in gu_pruned], a.sparsity),
            ]
        rows.append(row("torch", "peak_rss_mb", [peak], a.sparsity))
        rows.append(row("torch", "import_rss_mb", [import_rss], a.sparsity))
        rows += [row("torch", f"{method}_peak_device_mb", [mib], a.sparsity) for method, mib in peaks.items()]
        report = {
            "protocol": "bench-select",
            "prunus_version": prunus_version(),
            "dataset": "synthetic",
            "seeds": [a.seed],
            "config": {"params": n, "tensors": a.tensors, "sparsity": a.sparsity,
                       "scope": "global", "importance": "magnitude",
                       "backend": f"torch {torch.__version__} {device.type}", "device": device_name,
                       "threads": torch.get_num_threads(), "repeat": a.repeat},
            "rows": rows,
            "timing_s": {"generate": generate_s, "total": time.perf_counter() - started},
        }
        write_json_atomic(a.json, report)
        print(f"wrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
