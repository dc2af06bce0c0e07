#!/usr/bin/env bash
# Every GPU figure prunus owes, in one call, into one JSON report.
#
# Runs, with binaries built beforehand by bench/device-build.sh:
#   1. prunus adapters                       what wgpu sees
#   2. the wgpu conformance suite            PRUNUS_REQUIRE_GPU=1: fails, never skips
#   3. the wgpu Dense tests                  likewise
#   4. bench select --backend wgpu           every plan (gather, histograms,
#                                            device),
#                                            against the device's read floor
#   5. bench/peers_torch.py                  torch.kthvalue and
#                                            prune.global_unstructured on the
#                                            same GPU (skipped without torch)
#   6. bench obs --backend wgpu              the second-order stages, with
#                                            the GPU's GEMM tile and with the
#                                            64 x 64 one
#   7. lab cbs --backend wgpu --seeds 1      the CBS protocol (MNIST if given)
#   8. burn_wgpu (when built)                a burn model pruned, trained and
#                                            evaluated through BurnHost on
#                                            burn's wgpu device and on ndarray
#   9. with the CUDA binaries (device-build.sh --cuda): a model folder
#      pruned by SparseGPT at 50% with --device cpu and --device cuda, each
#      evaluated against the dense model (MiniLM's cosine, or the tiny
#      llama fixture's perplexity), and the 7B-block benchmark on CUDA
# and writes OUT/device.json (every step's status, time and report) and a
# summary table on standard output (bench/device_report.py).
#
# Usage: bench/device.sh [--small] [--bin DIR] [--data DIR] [--out DIR]
#                        [--gl DIR] [--budget SECONDS]
#   --small    CI sizes, for software Vulkan (the hand-computed conformance
#              cases only, 2M weights, d = 4,000, a short CBS run); the
#              default is the full sizes (the whole suites, 1,000,000,000
#              weights, d = 32,360 with N = 6,000, lab cbs at its defaults)
#   --bin      folder with prunus, wgpu and wgpu_dense, or their .xz
#              (default .device/bin)
#   --data     MNIST IDX folder for lab cbs (default BIN/../data/mnist, where
#              device-build.sh copies it, when present; else synthetic data)
#   --out      where the logs and reports go (default bench/out/device)
#   --gl       folder of loader .deb packages to unpack into / when the
#              machine has no libvulkan.so.1 (a bare device image)
#   --model    model folder for the calibrated CUDA check (default
#              BIN/../data/minilm-l6-v2 when present, else the tiny llama
#              fixture of the repository)
#   --budget   seconds for the whole run (default 420); each step's limit is
#              cut to what is left, and a step with under 10 s left is
#              skipped, so the report is always written
#
# Exits 0 when every step that ran passed (a step skipped for want of torch
# or time is not a failure), 1 otherwise, 2 on a usage error.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

small=0
bin=.device/bin
data=
out=bench/out/device
gl=
model=
budget=420
while [ $# -gt 0 ]; do
    case "$1" in
        --small) small=1; shift ;;
        --bin) bin=${2:?--bin needs a folder}; shift 2 ;;
        --data) data=${2:?--data needs a folder}; shift 2 ;;
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        --gl) gl=${2:?--gl needs a folder}; shift 2 ;;
        --model) model=${2:?--model needs a folder}; shift 2 ;;
        --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
        -h|--help) sed -n '2,47p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$budget" in ''|*[!0-9]*) echo "error: --budget $budget is not a whole number of seconds" >&2; exit 2 ;; esac
# device-build.sh compresses the binaries to travel.
for f in "$bin"/*.xz; do
    [ -e "$f" ] || continue
    xz -dkf "$f" && chmod +x "${f%.xz}" || exit 2
done
for b in prunus wgpu wgpu_dense; do
    if [ ! -x "$bin/$b" ]; then
        echo "error: $bin/$b is missing: build the binaries first with bench/device-build.sh" >&2
        exit 2
    fi
done
bin=$(cd "$bin" && pwd)
if [ -z "$data" ] && [ -d "$bin/../data/mnist" ]; then data=$bin/../data/mnist; fi
if [ -n "$data" ] && [ ! -d "$data" ]; then
    echo "error: --data $data is not a folder" >&2
    exit 2
fi
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out"/*.json "$out/steps.tsv"

# A bare device image may have the driver but no Vulkan loader.
if [ -n "$gl" ] && ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    echo "==> unpacking the loader packages from $gl"
    for f in "$gl"/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then
    export VK_DRIVER_FILES=$nvidia_icd
fi
nvidia_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$nvidia_egl" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$nvidia_egl
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export PRUNUS_REQUIRE_GPU=1

if [ "$small" = 1 ]; then
    select_args=(--params 2000000 --tensors 7 --repeat 2)
    torch_args=(--params 2000000 --tensors 7 --repeat 2)
    obs_args=(--params 4000 --samples 400 --block 4096)
    cbs_args=(--sparsities 0.5,0.9 --epochs 1 --fisher-samples 300 --trials 2)
    # The full suites already run in CI; here the step's plumbing is checked
    # on the hand-computed conformance cases.
    test_filter=(hand_computed)
    burn_args=(--small)
    limits=(60 300 300 120 120 120 180 300 180)
else
    select_args=(--params 1000000000 --repeat 5)
    torch_args=(--params 1000000000 --repeat 5)
    obs_args=()
    cbs_args=()
    test_filter=()
    burn_args=()
    limits=(30 180 150 90 90 150 150 240 120)
fi
cbs_data=()
if [ -n "$data" ]; then cbs_data=(--data "$data"); fi

start=$SECONDS
failed=0
printf 'step\tstatus\twall_s\tjson\tcommand\n' >"$out/steps.tsv"

# step NAME LIMIT JSON CMD...: runs CMD with its output in OUT/NAME.log, under
# min(LIMIT, time left); records status (passed, failed, timed-out, skipped).
step() {
    local name=$1 limit=$2 json=$3
    shift 3
    local left=$((budget - (SECONDS - start)))
    [ "$limit" -gt "$left" ] && limit=$left
    local status wall t0 rc
    if [ "$limit" -lt 10 ]; then
        status=skipped
        wall=0
        echo "skipped: under 10 s of the $budget s budget left" >"$out/$name.log"
    else
        printf '==> %s (limit %s s): %s\n' "$name" "$limit" "$*"
        t0=$(date +%s.%N)
        timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
        rc=$?
        wall=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
        case $rc in
            0) status=passed ;;
            124|137) status=timed-out ;;
            3) status=skipped ;;
            *) status=failed ;;
        esac
        tail -n 4 "$out/$name.log" | sed 's/^/    /'
        printf '    %s in %s s\n' "$status" "$wall"
    fi
    case $status in failed|timed-out) failed=1 ;; esac
    local command="$*"
    command=${command//[$'\t\n']/ }
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$wall" "$json" "$command" >>"$out/steps.tsv"
}

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >"$out/gpu.log" 2>&1
fi
step adapters "${limits[0]}" - "$bin/prunus" adapters
step conformance "${limits[1]}" - "$bin/wgpu" --test-threads 4 "${test_filter[@]}"
step dense "${limits[2]}" - "$bin/wgpu_dense" --test-threads 1
step select-gather "${limits[3]}" select-gather.json \
    "$bin/prunus" bench select --backend wgpu --plan gather "${select_args[@]}" --json "$out/select-gather.json"
step select-histograms "${limits[4]}" select-histograms.json \
    "$bin/prunus" bench select --backend wgpu --plan histograms "${select_args[@]}" --json "$out/select-histograms.json"
step select-device "${limits[4]}" select-device.json \
    "$bin/prunus" bench select --backend wgpu --plan device "${select_args[@]}" --json "$out/select-device.json"
# Exit status 3 marks "torch is not installed here" as a skip, not a failure.
step torch "${limits[5]}" torch.json bash -c '
    python3 -c "import torch" 2>/dev/null || { echo "skipped: torch is not installed"; exit 3; }
    exec python3 "$0/bench/peers_torch.py" "${@}"' "$root" "${torch_args[@]}" --json "$out/torch.json"
step obs "${limits[6]}" obs.json \
    "$bin/prunus" bench obs --backend wgpu "${obs_args[@]}" --json "$out/obs.json"
# The same with the 64 x 64 GEMM tile everywhere: what the 128 x 128 tile
# (the GPU default) gains or loses.
step obs-small-tile "${limits[6]}" obs-small-tile.json \
    "$bin/prunus" bench obs --backend wgpu --gemm-tile small "${obs_args[@]}" --json "$out/obs-small-tile.json"
step cbs "${limits[7]}" cbs.json \
    "$bin/prunus" lab cbs --backend wgpu --seeds 1 "${cbs_data[@]}" "${cbs_args[@]}" --json "$out/cbs.json"
if [ -x "$bin/burn_wgpu" ]; then
    step burn-wgpu "${limits[8]}" burn-wgpu.json \
        "$bin/burn_wgpu" "${burn_args[@]}" --json "$out/burn-wgpu.json"
else
    echo "==> no burn_wgpu in $bin (bench/device-build.sh without --no-burn builds it): step skipped"
fi

# The CUDA build: unpacked here, run against the device's driver and the
# CUDA 12 libraries of its Python wheels (torch's), with the CUDA runtime
# that travelled beside it.
if [ -x "$bin/prunus-cuda" ] && [ -x "$bin/block_bench-cuda" ]; then
    cuda_libs=$(python3 - <<'PY'
import glob, os, site, sys
names = ["libcublas.so.12", "libcublasLt.so.12", "libcurand.so.10", "libnvrtc.so.12"]
roots = site.getsitepackages() + [site.getusersitepackages(), "/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]
dirs = []
for n in names:
    hit = next((h for r in roots for h in glob.glob(os.path.join(r, "**", n), recursive=True)), None)
    if hit is None:
        print(f"warning: {n} not found", file=sys.stderr)
    elif os.path.dirname(hit) not in dirs:
        dirs.append(os.path.dirname(hit))
print(":".join(dirs))
PY
)
    paths=$bin/../lib
    for p in "$cuda_libs" "${LD_LIBRARY_PATH:-}"; do [ -n "$p" ] && paths=$paths:$p; done
    cuda_env=(env "LD_LIBRARY_PATH=$paths")
    if [ -z "$model" ]; then
        if [ -d "$bin/../data/minilm-l6-v2" ]; then model=$bin/../data/minilm-l6-v2; else model=$root/adapters/candle/tests/fixtures/tiny-llama; fi
    fi
    calib=$out/calibration.txt
    if [ -f "$bin/../data/text/python-docstrings.txt" ]; then
        head -512 "$bin/../data/text/python-docstrings.txt" >"$calib"
        tail -n +513 "$bin/../data/text/python-docstrings.txt" | head -1000 >"$out/eval.txt"
    else
        head -200 "$root/adapters/candle/tests/fixtures/make_llama.py" >"$calib"
        cp "$calib" "$out/eval.txt"
    fi
    for dev in cpu cuda; do
        rm -rf "$out/pruned-$dev"
        step "prune-$dev" 120 "prune-$dev.json" bash -c '"$@" > "${0}"' "$out/prune-$dev.json" \
            "${cuda_env[@]}" "$bin/prunus-cuda" prune "$model" \
            -o "$out/pruned-$dev" --method sparsegpt --sparsity 0.5 --calibration "$calib" \
            --device "$dev" --json --quiet
        step "eval-$dev" 120 "eval-$dev.json" bash -c '"$@" > "${0}"' "$out/eval-$dev.json" \
            "${cuda_env[@]}" "$bin/prunus-cuda" eval "$out/pruned-$dev" --reference "$model" \
            --text "$out/eval.txt" --device "$dev" --json
    done
    step block-cuda 240 - "${cuda_env[@]}" "$bin/block_bench-cuda" sparsegpt 128 2048 --device cuda
else
    echo "==> no CUDA binaries in $bin (bench/device-build.sh --cuda builds them): CUDA steps skipped"
fi

python3 bench/device_report.py "$out" --small "$small" --budget "$budget" --elapsed $((SECONDS - start)) || failed=1
exit $failed
