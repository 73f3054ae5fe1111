#!/usr/bin/env bash
# Compiles every kvmix-cuda/src/main/cuda/*.cu to PTX for sm_80 and sm_90 and records the SHA-256 of
# the CUDA sources the PTX was built from. The PTX is committed (a build without nvcc still works);
# PtxManifestTest fails when a .cu/.cuh file no longer matches the recorded hashes: rerun this script.
#
# Usage: kvmix-cuda/scripts/build-ptx.sh        (needs nvcc; NVCC=/path/to/nvcc to pick one)
#
# Flags: scripts/nvcc-flags.sh (quantize_pack.cu without multiply-add contraction).
set -euo pipefail
MODULE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$MODULE/src/main/cuda"
OUT="$MODULE/src/main/resources/io/kvmix/cuda/ptx"
NVCC="${NVCC:-nvcc}"
source "$MODULE/scripts/nvcc-flags.sh"
mkdir -p "$OUT"
rm -f "$OUT"/*.ptx
for cu in "$SRC"/*.cu; do
    name="$(basename "$cu" .cu)"
    mapfile -t flags < <(nvcc_flags "$SRC" "$name")
    for arch in 80 90; do
        "$NVCC" "${flags[@]}" -arch="sm_$arch" -ptx -o "$OUT/${name}.sm_$arch.ptx" "$cu"
    done
done
# Manifest: "<sha256>  <file>" for every CUDA source, sorted by name; compared by PtxManifestTest.
(cd "$SRC" && sha256sum $(ls *.cu *.cuh | sort)) > "$OUT/sources.sha256"
"$NVCC" --version | tail -1 > "$OUT/nvcc.version"
echo "wrote $(ls "$OUT" | wc -l) files to $OUT"
