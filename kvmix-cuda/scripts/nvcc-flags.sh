# Sourced by build-ptx.sh and local-sass.sh: the nvcc flags of one CUDA source of kvmix-cuda, the one place
# that knows them. quantize_pack.cu is built with -fmad=false (no multiply-add contraction: its arithmetic must
# match the CPU quantizer bit for bit, FORMAT.md section 1); the attention kernels may contract.
# Usage: nvcc_flags SRC_DIR NAME    (NAME without .cu; prints one flag per line)
nvcc_flags() {
    printf '%s\n' -std=c++17 -O3 -I "$1"
    [[ "$2" == quantize_pack ]] && printf '%s\n' -fmad=false
    return 0
}
