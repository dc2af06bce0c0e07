#!/usr/bin/env python3
"""Gathers the steps of bench/device.sh into one JSON report and a summary.

Reads OUT/steps.tsv (written by device.sh), each step's log and JSON report,
and OUT/gpu.log (nvidia-smi, when present); writes OUT/device.json atomically:

  {"protocol": "device", "small": ..., "budget_s": ..., "elapsed_s": ...,
   "gpu": "...", "adapter": "...",
   "steps": [{"name", "status", "wall_s", "command", "tests": {"passed",
              "failed", "ignored"} (test binaries), "report": {...} (the
              step's own JSON report, as written)}],
   "summary": {"select": {...}, "obs": {...}, "cbs": {...}, "burn": {...}}}

and prints the summary as a table. Exits 1 when a step failed or timed out,
or when a step that passed left no report it should have written.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile


def median(values):
    return statistics.median(values) if values else None


def rows(report, method=None, metric=None):
    """The report's rows matching method and metric."""
    return [r for r in (report or {}).get("rows", [])
            if (method is None or r.get("method") == method) and (metric is None or r.get("metric") == metric)]


def row_median(report, method, metric):
    found = rows(report, method, metric)
    return median(found[0]["values"]) if found else None


def test_counts(log):
    """Sums libtest's 'test result:' lines of a log."""
    counts = {"passed": 0, "failed": 0, "ignored": 0}
    seen = False
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", log):
        seen = True
        for key, value in zip(("passed", "failed", "ignored"), m.groups()):
            counts[key] += int(value)
    return counts if seen else None


def adapter_line(log):
    """The first adapter `prunus adapters` lists, as it prints it."""
    for line in log.splitlines():
        if line.strip() and not line.lower().startswith(("adapters", "wgpu", "no ")):
            return line.strip()
    return None


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".device-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder device.sh wrote")
    p.add_argument("--small", type=int, default=0)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--elapsed", type=float, default=None)
    a = p.parse_args()

    def read(name):
        path = os.path.join(a.out, name)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    table = read("steps.tsv")
    if table is None:
        print(f"error: {a.out}/steps.tsv is missing: run bench/device.sh", file=sys.stderr)
        return 2
    bad = False
    steps = []
    reports = {}
    for line in table.splitlines()[1:]:
        name, status, wall, json_name, command = line.split("\t", 4)
        log = read(f"{name}.log") or ""
        step = {"name": name, "status": status, "wall_s": float(wall), "command": command}
        tests = test_counts(log)
        if tests is not None:
            step["tests"] = tests
        if json_name != "-":
            text = read(json_name)
            if text is not None:
                try:
                    step["report"] = reports[name] = json.loads(text)
                except ValueError as e:
                    step["report_error"] = f"{json_name} is not JSON: {e}"
                    bad = True
            elif status == "passed":
                step["report_error"] = f"{json_name} was not written"
                bad = True
        if status in ("failed", "timed-out"):
            step["log_tail"] = log.splitlines()[-30:]
            bad = True
        steps.append(step)

    gpu = (read("gpu.log") or "").strip().splitlines()
    adapter = adapter_line(read("adapters.log") or "")
    summary = {"select": {}, "obs": {}, "cbs": {}, "burn": {}, "calibration": {}}
    for plan in ("gather", "histograms", "device"):
        rep = reports.get(f"select-{plan}")
        if rep:
            floor, prune = row_median(rep, "prunus", "floor_ms"), row_median(rep, "prunus", "prunus_ms")
            summary["select"][f"prunus_{plan}"] = {
                "floor_ms": floor, "prune_ms": prune,
                "ratio": prune / floor if floor and prune else None,
                "floor_gb_s": row_median(rep, "prunus", "floor_gb_s"),
                "passes": row_median(rep, "prunus", "passes"),
                "candidates": row_median(rep, "prunus", "candidates"),
                "params": rep.get("config", {}).get("params"),
                "adapter": rep.get("config", {}).get("adapter"),
            }
    rep = reports.get("torch")
    if rep:
        summary["select"]["torch"] = {
            m: row_median(rep, "torch", m)
            for m in ("floor_ms", "prune_ms", "kthvalue_ms", "global_unstructured_ms", "floor_gb_s")
        }
        summary["select"]["torch"]["device"] = rep.get("config", {}).get("device")
        summary["select"]["torch"]["exact"] = row_median(rep, "torch", "exact")
    rep = reports.get("obs")
    if rep:
        summary["obs"] = {r["method"]: median(r["values"]) for r in rows(rep, metric="wall_s")}
        summary["obs"]["config"] = rep.get("config", {})
        # What the device did per stage (GPU backend only): MB each way and
        # the device's dense GFLOP/s.
        traffic = {}
        for metric, key in (("uploaded_bytes", "uploaded_mb"), ("kept_bytes", "kept_mb"),
                            ("read_back_bytes", "read_back_mb"), ("device_gflop_s", "gflop_s")):
            for r in rows(rep, metric=metric):
                v = median(r["values"])
                traffic.setdefault(r["method"], {})[key] = v / 1e6 if key.endswith("_mb") else v
        if traffic:
            summary["obs_traffic"] = traffic
    rep = reports.get("obs-small-tile")
    if rep:
        summary["obs_small_tile"] = {r["method"]: median(r["values"]) for r in rows(rep, metric="wall_s")}
    rep = reports.get("cbs")
    if rep:
        for r in rows(rep, metric="test_acc"):
            summary["cbs"].setdefault(r["method"], {})[str(r.get("sparsity"))] = median(r["values"])

    rep = reports.get("burn-wgpu")
    if rep:
        for r in rows(rep):
            summary["burn"].setdefault(r["method"], {})[r["metric"]] = median(r["values"])
        summary["burn"]["adapter"] = rep.get("config", {}).get("adapter")

    for dev in ("cpu", "cuda"):
        pruned, evaluated = reports.get(f"prune-{dev}"), reports.get(f"eval-{dev}")
        if pruned or evaluated:
            pruned, evaluated = pruned or {}, evaluated or {}
            summary["calibration"][dev] = {
                "prune_wall_s": pruned.get("wall_s"),
                "forward_s": pruned.get("forward_s"),
                "solve_s": pruned.get("solve_s"),
                "device_memory_mib": pruned.get("device_memory_mib"),
                "mean_cosine": evaluated.get("mean_cosine"),
                "perplexity": evaluated.get("perplexity"),
                "reference_perplexity": evaluated.get("reference_perplexity"),
            }
    block = read("block-cuda.log")
    if block:
        summary["calibration"]["block_cuda"] = [l for l in block.splitlines() if l.strip()][-3:]

    report = {
        "protocol": "device",
        "small": bool(a.small),
        "budget_s": a.budget,
        "elapsed_s": a.elapsed,
        "gpu": gpu,
        "adapter": adapter,
        "steps": steps,
        "summary": summary,
    }
    path = os.path.join(a.out, "device.json")
    write_atomic(path, json.dumps(report, indent=1, sort_keys=False) + "\n")

    fmt = lambda v, unit="": "-" if v is None else (f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}")
    print()
    print(f"device report: {path}")
    for line in gpu:
        print(f"  gpu: {line}")
    print(f"  wgpu adapter: {adapter or '-'}")
    print(f"  {'step':<20}{'status':<11}{'wall':>9}  tests")
    for s in steps:
        t = s.get("tests")
        tests = f"{t['passed']} passed, {t['failed']} failed" if t else ""
        print(f"  {s['name']:<20}{s['status']:<11}{s['wall_s']:>8.1f}s  {tests}")
    sel = summary["select"]
    if sel:
        print(f"  {'select':<24}{'floor ms':>10}{'prune ms':>10}{'ratio':>8}{'kthvalue':>10}{'global_unstr.':>14}"
              f"{'passes':>8}{'listed':>12}")
        for name, v in sel.items():
            print(f"  {name:<24}{fmt(v.get('floor_ms')):>10}{fmt(v.get('prune_ms')):>10}{fmt(v.get('ratio')):>8}"
                  f"{fmt(v.get('kthvalue_ms')):>10}{fmt(v.get('global_unstructured_ms')):>14}"
                  f"{fmt(v.get('passes')):>8}{fmt(v.get('candidates')):>12}")
    if summary["obs"]:
        stages = {k: v for k, v in summary["obs"].items() if k != "config"}
        print("  obs stages (s): " + ", ".join(f"{k} {fmt(v)}" for k, v in stages.items()))
    if summary.get("obs_small_tile"):
        print("  obs stages, 64 x 64 GEMM tile (s): "
              + ", ".join(f"{k} {fmt(v)}" for k, v in summary["obs_small_tile"].items()))
    for stage, t in summary.get("obs_traffic", {}).items():
        print(f"  obs {stage:<11} uploaded {fmt(t.get('uploaded_mb'))} MB, kept {fmt(t.get('kept_mb'))} MB, "
              f"read back {fmt(t.get('read_back_mb'))} MB, device {fmt(t.get('gflop_s'))} GFLOP/s")
    for method, accs in summary["cbs"].items():
        print(f"  cbs {method:<8}" + "  ".join(f"{s}: {fmt(acc)}" for s, acc in sorted(accs.items())))
    for device, v in summary["burn"].items():
        if device == "adapter":
            continue
        print(f"  burn on {device:<8}" + ", ".join(
            f"{k[:-2]} {fmt(None if t is None else t * 1000, ' ms')}" for k, t in v.items() if k.endswith("_s")))
    for dev, v in summary["calibration"].items():
        if dev == "block_cuda":
            for line in v:
                print(f"  block (cuda): {line.strip()}")
            continue
        print(f"  sparsegpt 50% on {dev}: prune {fmt(v['prune_wall_s'], ' s')}, forward {fmt(v['forward_s'], ' s')}, "
              f"solves {fmt(v['solve_s'], ' s')}, GPU memory {fmt(v['device_memory_mib'], ' MiB')}, "
              f"cosine {fmt(v['mean_cosine'])}, perplexity {fmt(v['perplexity'])} (dense {fmt(v['reference_perplexity'])})")
    if a.elapsed is not None:
        print(f"  elapsed {a.elapsed:.0f} s of a {a.budget:.0f} s budget")
    print("  " + ("SOME STEPS FAILED" if bad else "all steps that ran passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
