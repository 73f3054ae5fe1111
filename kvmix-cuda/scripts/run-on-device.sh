#!/usr/bin/env bash
# Runs on the GPU machine, from the folder stage-device.sh filled (carried as .device):
#   bash .device/run-on-device.sh tests bench
# tests: the kvmix-cuda JUnit suite on the GPU (JUnit console launcher) -> $OUT/gpu-tests.txt + XML reports
# bench: PyTorch fp16 SDPA baseline, then DeviceBench -> $OUT/sdpa.json, $OUT/results.json
# variants: DeviceBench of each jar that stage-variant.sh put in variants/, with the same SDPA figures
#          -> $OUT/results-<name>.json (run after bench, in the same call, for side-by-side numbers)
# occupy: the model of the H200 on an H100: DeviceBench of batch 8 x 4096 and batch 1 x 32768 scaled by
#         OCCUPY_SCALE (default 0.75) with OCCUPY_SMS (default 33) multiprocessors held, for the staged jar and
#         each variant (of 84c68ee or later: older DeviceBench has no --scale) -> $OUT/results-occupied[-<name>].json
#         (the 99 left get an H200's CTAs and about its bandwidth each: see the README)
# profile: Nsight Compute (full set, real clocks) of the first 2-bit attention and prefill append launches of
#          batch 8 x 4096 -> $OUT/<kernel>.ncu-rep, <kernel>-details.txt and <kernel>-sass.csv.gz (per-instruction
#          counts, stalls)
# PtxManifestTest is left out there: it reads the CUDA sources of the build tree, which is not carried
# (it runs with every ./run-tests instead).
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-/tmp/kvmix-device-out}"
mkdir -p "$OUT"
tar xJf "$DIR/jre25.txz" -C /tmp 2>/dev/null \
    || python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall("/tmp")' "$DIR/jre25.txz"
JAVA=(/tmp/jre/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED)
export CUDA_CACHE_PATH=/tmp/kvmix-cuda-jit-cache   # the PTX is compiled once, shared by both JVMs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/device.txt" || true
for task in "$@"; do
    case "$task" in
        tests)
            classpath="$(ls "$DIR"/lib/*.jar "$DIR"/test/*.jar | tr '\n' ':')"
            "${JAVA[@]}" -jar "$DIR"/junit/junit-platform-console-standalone-*.jar execute \
                --class-path "$classpath" --scan-class-path "$DIR/test/kvmix-cuda-tests.jar" \
                --exclude-classname '.*PtxManifestTest' --reports-dir "$OUT/junit" \
                --details tree --disable-banner > "$OUT/gpu-tests.txt" 2>&1 || echo "GPU tests failed" >&2
            tail -25 "$OUT/gpu-tests.txt"
            ;;
        bench)
            python3 "$DIR/bench/sdpa_baseline.py" > "$OUT/sdpa.json"
            "${JAVA[@]}" -Xmx48g -cp "$DIR/lib/*" io.kvmix.cuda.bench.DeviceBench --sdpa "$OUT/sdpa.json" \
                > "$OUT/results.json"
            ;;
        variants)
            [ -f "$OUT/sdpa.json" ] || python3 "$DIR/bench/sdpa_baseline.py" > "$OUT/sdpa.json"
            for variant in "$DIR"/variants/*.jar; do
                [ -f "$variant" ] || { echo "no variants staged (kvmix-cuda/scripts/stage-variant.sh)" >&2; break; }
                classpath="$(ls "$variant" "$DIR"/lib/*.jar | grep -v '/lib/kvmix-cuda-' | tr '\n' ':')"
                "${JAVA[@]}" -Xmx48g -cp "$classpath" io.kvmix.cuda.bench.DeviceBench --sdpa "$OUT/sdpa.json" \
                    > "$OUT/results-$(basename "$variant" .jar).json"
            done
            ;;
        occupy)
            [ -f "$OUT/sdpa.json" ] || python3 "$DIR/bench/sdpa_baseline.py" > "$OUT/sdpa.json"
            for jar in "$DIR"/lib/kvmix-cuda-*.jar "$DIR"/variants/*.jar; do
                [ -f "$jar" ] || continue
                case "$jar" in */variants/*) suffix="-$(basename "$jar" .jar)" ;; *) suffix="" ;; esac
                classpath="$(ls "$DIR"/lib/*.jar | grep -v '/lib/kvmix-cuda-' | tr '\n' ':')$jar"
                "${JAVA[@]}" -Xmx48g -cp "$classpath" io.kvmix.cuda.bench.DeviceBench --sdpa "$OUT/sdpa.json" \
                    --shapes batch8_ctx4096,batch1_ctx32768 --occupy-sms "${OCCUPY_SMS:-33}" --scale "${OCCUPY_SCALE:-0.75}" \
                    > "$OUT/results-occupied$suffix.json"
            done
            ;;
        profile)
            ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
            for kernel in kvmix_attend_d128_g1 kvmix_append_stream_d128; do
                "$ncu" --target-processes all -k "$kernel" -c 1 --clock-control none --set full --import-source no \
                    -f -o "$OUT/$kernel" \
                    "${JAVA[@]}" -Xmx48g -cp "$DIR/lib/*" io.kvmix.cuda.bench.DeviceBench --shapes batch8_ctx4096 \
                    --samples 3 > "$OUT/$kernel-bench.json" 2> "$OUT/$kernel-ncu.log" || tail -5 "$OUT/$kernel-ncu.log"
                "$ncu" -i "$OUT/$kernel.ncu-rep" --page details > "$OUT/$kernel-details.txt"
                "$ncu" -i "$OUT/$kernel.ncu-rep" --page source --csv --print-source sass | gzip > "$OUT/$kernel-sass.csv.gz"
            done
            ;;
        *)
            echo "unknown task $task (tests, bench, variants, occupy, profile)" >&2
            exit 2
            ;;
    esac
done
