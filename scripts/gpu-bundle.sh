#!/usr/bin/env bash
# The GPU check (`cargo xtask gpu-check`) for a GPU machine that has neither Rust nor a network:
# build and pack everything it needs here, copy one folder there, run one command there.
#
#   scripts/gpu-bundle.sh pack DIR [CIFAR10_DIR]   # here: needs the CUDA toolchain with --link
#                                                  # (scripts/cuda-toolchain.sh), no GPU
#   scripts/gpu-bundle.sh run DIR OUT [ARGS…]      # there, in a copy of the repository
#
# `pack` builds the CUDA binaries (`cargo xtask gpu-check --build-only`), packs them with xz into
# DIR/bin.tar.xz (candle's PTX, which each of the three CUDA binaries embeds, is most of their
# size and compresses well) and copies CIFAR-10's first training batch and its test batch from
# CIFAR10_DIR into DIR/cifar10 for the E3 epoch. Without CIFAR10_DIR the E3 part looks for
# CIFAR-10 where `explr` does ($EXPLR_DATA, the per-user cache) and fails if it is not there.
#
# `run` unpacks the binaries into a temporary folder and runs the check from the root of the
# repository the script is in (wherever it is called from). The report goes to
# OUT/gpu-check.md (rewritten after each part, so a run stopped early keeps what it measured),
# the parity tests' comparisons to OUT/gpu-check.parity.json, the whole log to
# OUT/gpu-check.log. ARGS go to `gpu-check` (e.g. `--skip e3`, `--part-timeout 120`). The
# machine needs the NVIDIA driver, python3 with a CUDA build of PyTorch (for the PyTorch side of
# the timing), and the CUDA libraries (cuBLAS, cuRAND, the runtime) that PyTorch's nvidia-*
# wheels or a CUDA toolkit provide.
set -euo pipefail

usage() {
    sed -n '2,7p' "$0" >&2
    exit 2
}
[ $# -ge 2 ] || usage
verb=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
shift 2
# The third argument is a folder too (CIFAR10_DIR, OUT): absolute before leaving the caller's
# directory for the repository root, where cargo and the binaries find the workspace.
if [ $# -ge 1 ]; then
    [ "$verb" = pack ] || mkdir -p "$1"
    [ -d "$1" ] || {
        echo "gpu-bundle: $1 is not a folder" >&2
        exit 1
    }
    third=$(cd "$1" && pwd)
    shift
    set -- "$third" "$@"
fi
cd "$(dirname "$0")/.."

case $verb in
pack)
    [ $# -le 1 ] || usage
    command -v nvcc >/dev/null || {
        echo "gpu-bundle: no nvcc on PATH: eval \"\$(scripts/cuda-toolchain.sh DIR --link)\" first" >&2
        exit 1
    }
    bins=$(mktemp -d)
    trap 'rm -rf "$bins"' EXIT
    cargo xtask gpu-check --build-only "$bins"
    tar -C "$bins" -cf - . | xz -9 >"$dir/bin.tar.xz.partial"
    mv "$dir/bin.tar.xz.partial" "$dir/bin.tar.xz"
    if [ $# -eq 1 ]; then
        src=$1
        [ -d "$src/cifar-10-batches-bin" ] && src=$src/cifar-10-batches-bin
        for f in data_batch_1.bin test_batch.bin; do
            [ -f "$src/$f" ] || {
                echo "gpu-bundle: $src has no $f (CIFAR-10's binary version)" >&2
                exit 1
            }
        done
        mkdir -p "$dir/cifar10"
        install -m 644 "$src/data_batch_1.bin" "$src/test_batch.bin" "$dir/cifar10/"
    fi
    echo "gpu-bundle: $(du -sh "$dir" | cut -f1) in $dir ($(cat "$bins/BUILD_INFO" | tr '\n' ' '))" >&2
    ;;
run)
    [ $# -ge 1 ] || usage
    out=$1
    shift
    [ -f "$dir/bin.tar.xz" ] || {
        echo "gpu-bundle: no $dir/bin.tar.xz: make it with \`scripts/gpu-bundle.sh pack $dir\`" >&2
        exit 1
    }
    bins=$(mktemp -d)
    trap 'rm -rf "$bins"' EXIT
    xz -dc "$dir/bin.tar.xz" | tar -C "$bins" -xf -
    data=()
    [ -d "$dir/cifar10" ] && data=(--data-dir "$dir/cifar10")
    "$bins/xtask" gpu-check --prebuilt "$bins" "${data[@]}" --out "$out/gpu-check.md" "$@" \
        2>&1 | tee "$out/gpu-check.log"
    ;;
*)
    usage
    ;;
esac
