#!/usr/bin/env bash
# SASS of a .cu of this module without a GPU or a full CUDA toolkit: compiles it with the local nvcc to an
# sm_90 cubin and disassembles that with nvdisasm from Debian's nvidia-cuda-toolkit package (CUDA 11.8,
# component non-free), unpacked once into ~/.cache/kvmix-nvdisasm (nothing installed system-wide).
# nvdisasm 11.8 rejects the ELF header that CUDA 12.8+ writes; the copy it reads gets CUDA 11's header values
# for sm_90 (OS ABI 0x33, ABI version 7, flags 0x005a055a); the code sections are unchanged.
#
# Usage: kvmix-cuda/scripts/local-sass.sh [CU_FILE] > kernels.sass     (default: fused_attention.cu)
# Needs `non-free` among the apt components (e.g. Components: main non-free in /etc/apt/sources.list.d/).
set -euo pipefail
MODULE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$MODULE/src/main/cuda"
cu="${1:-$SRC/fused_attention.cu}"
tools="$HOME/.cache/kvmix-nvdisasm"
if [ ! -x "$tools/usr/bin/nvdisasm" ]; then
    mkdir -p "$tools"
    (cd "$tools" && apt-get download nvidia-cuda-toolkit >&2) || {
        echo "local-sass.sh: apt-get download nvidia-cuda-toolkit failed (is the non-free component enabled?)" >&2
        exit 1
    }
    dpkg-deb -x "$tools"/nvidia-cuda-toolkit_*.deb "$tools"
fi
source "$MODULE/scripts/nvcc-flags.sh"
mapfile -t flags < <(nvcc_flags "$SRC" "$(basename "$cu" .cu)")
cubin="$(mktemp --suffix=.cubin)"
trap 'rm -f "$cubin"' EXIT
nvcc "${flags[@]}" -arch=sm_90 -cubin -o "$cubin" "$cu"
python3 - "$cubin" <<'PY'
import struct, sys
path = sys.argv[1]
elf = bytearray(open(path, "rb").read())
elf[7], elf[8] = 0x33, 7                       # OS ABI, ABI version as CUDA 11 writes them
struct.pack_into("<I", elf, 48, 0x005A055A)    # e_flags: sm_90, virtual sm_90, 64-bit addresses, unified texmode
open(path, "wb").write(elf)
PY
"$tools/usr/bin/nvdisasm" -c "$cubin"
