#!/usr/bin/env bash
# Builds what bench/device.sh runs, on this machine, into one folder that can
# travel to a machine with a GPU (a lent device has no Rust toolchain and no
# network):
#
#   DIR/bin/prunus.xz      the release CLI
#   DIR/bin/wgpu.xz        the wgpu conformance suite (release test binary)
#   DIR/bin/wgpu_dense.xz  the wgpu Dense tests (release test binary)
#   DIR/bin/burn_wgpu.xz   prunus-burn's wgpu_bench example: a burn model
#                          pruned and trained through BurnHost on burn's
#                          wgpu device beside ndarray, timed (release,
#                          --features wgpu; --no-burn skips it)
#   DIR/data/mnist       a copy of the MNIST test set, when --mnist finds one
#   DIR/data/text        the calibration sentences beside it, when present
#   DIR/gl/*.deb         with --gl: the Vulkan/EGL loader packages (amd64) for
#                        a device image that has the driver but no loader
#   DIR/bin/prunus-cuda.xz, DIR/bin/block_bench-cuda.xz, DIR/lib/
#                        with --cuda: the CLI and the block benchmark built
#                        with candle's CUDA kernels, and the CUDA runtime
#                        they load
#
# Usage: bench/device-build.sh [DIR] [--mnist SRC] [--gl] [--cuda]
#                              [--no-burn | --burn-from-tests]
#   DIR      output folder (default .device, which .gitignore ignores)
#   --no-burn          leave out burn_wgpu (its release build compiles burn
#                      and its GPU runtime: minutes on a small machine)
#   --burn-from-tests  build burn_wgpu in the test profile with the
#                      workspace's test features, as `cargo test --workspace
#                      --features prunus-burn/wgpu` does, so that it reuses
#                      that build (CI: a smoke run, not a timing)
#   --mnist  where the MNIST IDX files are (default ../shared/data/mnist;
#            skipped with a notice when absent)
#   --gl     also download the loader packages (needs apt's package lists)
#   --cuda   also build the CUDA binaries. No GPU and no system toolkit are
#            needed: nvcc 13.0 comes from Python's package index
#            (nvidia-cuda-nvcc), the CUDA 12.9 libraries linked against
#            (cuBLAS, cuRAND, NVRTC) from the -cu12 wheels, and a stub
#            libcuda.so is generated for the link; all go to
#            $CUDA_TOOLKIT (default .device/cuda-toolkit, installed when
#            missing). Kernels are compiled for CUDA_COMPUTE_CAP (default
#            90: H100, H200) to PTX 9.0, which needs an NVIDIA driver of
#            580 or newer; at run time the device's driver and its
#            libcublas.so.12, libcublasLt.so.12, libcurand.so.10 and
#            libnvrtc.so.12 (torch's cu12 wheels carry them) are used, with
#            DIR/lib/libcudart.so.13.
#
# Debug information is stripped from the copies and every binary is
# xz-compressed (bench/device.sh unpacks them), so that the folder stays well
# under the device tool's 64 MiB transfer limit; the size is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.device
mnist=../shared/data/mnist
gl=0
cuda=0
burn=release
while [ $# -gt 0 ]; do
    case "$1" in
        --mnist) mnist=${2:?--mnist needs a folder}; shift 2 ;;
        --gl) gl=1; shift ;;
        --cuda) cuda=1; shift ;;
        --no-burn) burn=none; shift ;;
        --burn-from-tests) burn=tests; shift ;;
        -h|--help) sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) dir=$1; shift ;;
    esac
done

mkdir -p "$dir/bin"

echo "==> release CLI"
cargo build --release -p prunus-cli
cli=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/prunus

echo "==> release wgpu test binaries"
# cargo prints the executables it built as JSON messages; take the two named.
tests=$(cargo test --release -p prunus-tests --test wgpu --test wgpu_dense --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("wgpu", "wgpu_dense"):
        print(m["target"]["name"], m["executable"])
')
if [ "$(printf '%s\n' "$tests" | grep -c .)" -ne 2 ]; then
    echo "error: expected the wgpu and wgpu_dense test binaries from cargo, got: $tests" >&2
    exit 1
fi

copy() { # copy SRC NAME: a stripped copy, written atomically
    cp "$1" "$dir/bin/.$2.tmp"
    strip --strip-debug "$dir/bin/.$2.tmp" 2>/dev/null || true
    mv "$dir/bin/.$2.tmp" "$dir/bin/$2"
}
copy "$cli" prunus
while read -r name path; do copy "$path" "$name"; done <<<"$tests"

# cargo prints the example it built as a JSON message; take its executable.
example_path() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "wgpu_bench":
        print(m["executable"])
'
}
case "$burn" in
    release)
        echo "==> prunus-burn on burn's wgpu device (release example)"
        bench=$(cargo build --release -p prunus-burn --features wgpu --example wgpu_bench --message-format=json | example_path) ;;
    tests)
        echo "==> prunus-burn on burn's wgpu device (test profile, the workspace's test features)"
        bench=$(cargo build --profile test --workspace --features prunus-burn/wgpu --example wgpu_bench \
            --message-format=json | example_path) ;;
    none)
        bench=
        echo "==> burn_wgpu left out (--no-burn)" ;;
esac
if [ "$burn" != none ]; then
    if [ -z "$bench" ]; then
        echo "error: cargo did not report the wgpu_bench example's executable" >&2
        exit 1
    fi
    copy "$bench" burn_wgpu
fi

if [ -d "$mnist" ]; then
    mkdir -p "$dir/data/mnist"
    cp "$mnist"/*-ubyte* "$dir/data/mnist/"
    echo "==> MNIST copied from $mnist"
else
    echo "==> no MNIST at $mnist: bench/device.sh will run lab cbs on synthetic data"
fi

text=$(dirname "$mnist")/text/python-docstrings.txt
if [ -f "$text" ]; then
    mkdir -p "$dir/data/text"
    cp "$text" "$dir/data/text/"
    echo "==> calibration text copied from $text"
fi

if [ "$gl" = 1 ]; then
    echo "==> Vulkan/EGL loader packages (amd64)"
    mkdir -p "$dir/gl" /tmp/prunus-amd64-lists/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/prunus-amd64-lists)
    apt-get "${o[@]}" update -qq
    (cd "$dir/gl" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

if [ "$cuda" = 1 ]; then
    echo "==> CUDA build (compute capability ${CUDA_COMPUTE_CAP:-90})"
    tk=${CUDA_TOOLKIT:-.device/cuda-toolkit}
    if [ ! -x "$tk/nvidia/cu13/bin/nvcc" ] || [ ! -e "$tk/nvidia/cublas/lib/libcublas.so.12" ]; then
        python3 -m pip install --quiet --no-deps --target "$tk" \
            "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
            "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
            "nvidia-cublas-cu12==12.9.*" "nvidia-curand-cu12==10.3.*" "nvidia-cuda-nvrtc-cu12==12.9.*"
    fi
    tk=$(cd "$tk" && pwd)
    link=$tk/link/lib
    mkdir -p "$link"
    # The linker wants unversioned names; the binary records the versioned
    # sonames these point to.
    ln -sf "$tk/nvidia/cublas/lib/libcublas.so.12" "$link/libcublas.so"
    ln -sf "$tk/nvidia/cublas/lib/libcublasLt.so.12" "$link/libcublasLt.so"
    ln -sf "$tk/nvidia/curand/lib/libcurand.so.10" "$link/libcurand.so"
    ln -sf "$tk/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" "$link/libnvrtc.so"
    # candle's statically compiled kernels register through the CUDA
    # runtime of the nvcc that built them (13.0); it is small, so it travels.
    ln -sf "$tk/nvidia/cu13/lib/libcudart.so.13" "$link/libcudart.so"
    mkdir -p "$dir/lib"
    cp "$tk/nvidia/cu13/lib/libcudart.so.13" "$dir/lib/"
    # libcuda.so comes with the driver, not with a wheel: link against a stub
    # exporting every driver function cudarc declares (each returns
    # CUDA_ERROR_STUB_LIBRARY, 34), named libcuda.so.1 as the driver's is.
    cudarc=$(cargo metadata --format-version 1 --features cuda --manifest-path cli/Cargo.toml |
        python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys/mod.rs" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' |
        sort -u | awk '{print "int " $1 "(void) { return 34; }"}' >"$tk/link/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$tk/link/cuda_stub.c"
    export PATH="$tk/nvidia/cu13/bin:$PATH" CUDA_HOME="$tk/link" CUDARC_CUDA_VERSION=12090
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    cargo build --release -p prunus-cli --features cuda
    cuda_cli=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/prunus
    copy "$cuda_cli" prunus-cuda
    cargo build --release -p prunus-candle --features cuda --example block_bench
    copy "$(dirname "$cuda_cli")/examples/block_bench" block_bench-cuda
    # The default build again, so that target/release/prunus is the one
    # without CUDA (cargo keeps both builds' artifacts; this only relinks).
    (unset CUDA_HOME CUDARC_CUDA_VERSION; cargo build --release -p prunus-cli)
fi

# xz-compressed to travel (a third of the size); bench/device.sh unpacks
# them.
for f in "$dir"/bin/*; do
    case "$f" in *.xz) ;; *) xz -T0 -6 -f "$f" ;; esac
done

du -sh "$dir"
ls -l "$dir/bin"
