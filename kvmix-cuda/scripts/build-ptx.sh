#!/usr/bin/env bash
# Compiles kvmix-cuda/src/main/cuda/*.cu to PTX for sm_80 and sm_90 (gzip -n, deterministic) and records the
# SHA-256 of the CUDA sources the PTX was built from. The PTX is committed (a build without nvcc still
# works); PtxManifestTest fails when a .cu/.cuh file no longer matches the recorded hashes: rerun this script.
#
# Usage: kvmix-cuda/scripts/build-ptx.sh        (needs nvcc; NVCC=/path/to/nvcc to pick one; ~3 min on 2 cores)
#
# Modules (resources io/kvmix/cuda/ptx/<module>.<arch>.ptx.gz):
#   quantize_pack                        the append kernels, built with -fmad=false (no multiply-add
#                                        contraction: their arithmetic must match the CPU quantizer bit for bit,
#                                        FORMAT.md section 1)
#   fused_attention                      the split-combine kernel
#   fused_attention.d<D>_g<GQ>_k<KB>v<VB> one attention kernel each (head dim, query heads per KV head, key and
#                                        value bits): the driver JITs a module whole when it loads it, and all
#                                        128 in one module would take it over a minute
# The instance set must match DeviceBatchKvCache.HEAD_DIMS, QUERY_GROUPS and bit widths 1-4 (PtxManifestTest).
set -euo pipefail
MODULE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$MODULE/src/main/cuda"
OUT="$MODULE/src/main/resources/io/kvmix/cuda/ptx"
NVCC="${NVCC:-nvcc}"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$OUT"
rm -f "$OUT"/*.ptx "$OUT"/*.ptx.gz

# compile <source> <module> [nvcc flags...]: writes <module>.sm_80.ptx.gz and <module>.sm_90.ptx.gz
compile() {
    local cu="$1" module="$2"
    shift 2
    for arch in 80 90; do
        "$NVCC" -std=c++17 -O3 -I "$SRC" -diag-suppress 177 "$@" -arch="sm_$arch" -ptx -o - "$SRC/$cu" \
            | gzip -n -9 > "$OUT/$module.sm_$arch.ptx.gz"
    done
}
export -f compile
export NVCC SRC OUT

{
    echo "quantize_pack.cu quantize_pack -fmad=false"
    echo "fused_attention.cu fused_attention"
    for d in 64 128; do
        for gq in 1 2 4 8; do
            for kb in 1 2 3 4; do
                for vb in 1 2 3 4; do
                    echo "fused_attention.cu fused_attention.d${d}_g${gq}_k${kb}v${vb}" \
                         "-DKVMIX_ATTEND_D=$d -DKVMIX_ATTEND_GQ=$gq -DKVMIX_ATTEND_KB=$kb -DKVMIX_ATTEND_VB=$vb"
                done
            done
        done
    done
} | xargs -P "$JOBS" -L 1 bash -c 'compile "$@"' _

# Manifest: "<sha256>  <file>" for every CUDA source, sorted by name; compared by PtxManifestTest.
(cd "$SRC" && sha256sum $(ls *.cu *.cuh | sort)) > "$OUT/sources.sha256"
"$NVCC" --version | tail -1 > "$OUT/nvcc.version"
echo "wrote $(ls "$OUT" | wc -l) files ($(du -sh "$OUT" | cut -f1)) to $OUT"
