#!/usr/bin/env bash
# Builds what bench/device.sh runs, on this machine, into one folder that can
# travel to a machine with a GPU (a lent device has no Rust toolchain and no
# network):
#
#   DIR/bin/prunus       the release CLI
#   DIR/bin/wgpu         the wgpu conformance suite (release test binary)
#   DIR/bin/wgpu_dense   the wgpu Dense tests (release test binary)
#   DIR/data/mnist       a copy of the MNIST test set, when --mnist finds one
#   DIR/gl/*.deb         with --gl: the Vulkan/EGL loader packages (amd64) for
#                        a device image that has the driver but no loader
#
# Usage: bench/device-build.sh [DIR] [--mnist SRC] [--gl]
#   DIR      output folder (default .device, which .gitignore ignores)
#   --mnist  where the MNIST IDX files are (default ../shared/data/mnist;
#            skipped with a notice when absent)
#   --gl     also download the loader packages (needs apt's package lists)
#
# Debug information is stripped from the copies so that the folder stays well
# under the device tool's 64 MiB transfer limit; the size is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.device
mnist=../shared/data/mnist
gl=0
while [ $# -gt 0 ]; do
    case "$1" in
        --mnist) mnist=${2:?--mnist needs a folder}; shift 2 ;;
        --gl) gl=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

if [ -d "$mnist" ]; then
    mkdir -p "$dir/data/mnist"
    cp "$mnist"/*-ubyte* "$dir/data/mnist/"
    echo "==> MNIST copied from $mnist"
else
    echo "==> no MNIST at $mnist: bench/device.sh will run lab cbs on synthetic data"
fi

if [ "$gl" = 1 ]; then
    echo "==> Vulkan/EGL loader packages (amd64)"
    mkdir -p "$dir/gl" /tmp/prunus-amd64-lists/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/prunus-amd64-lists)
    apt-get "${o[@]}" update -qq
    (cd "$dir/gl" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

du -sh "$dir"
ls -l "$dir/bin"
