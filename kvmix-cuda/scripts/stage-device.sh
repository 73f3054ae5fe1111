#!/usr/bin/env bash
# Stages everything a GPU run of kvmix-cuda needs into one folder to carry to the device machine
# (which has no Java and no Maven): a JDK 25 runtime, the runtime jars, the test classes, the JUnit
# console launcher, the SDPA baseline script and run-on-device.sh.
#
# Usage: kvmix-cuda/scripts/stage-device.sh [DEST]     (default: <repo>/.device, which .gitignore ignores)
# Then run through the device tool, from the repo root, with carry [".device"]:
#   bash .device/run-on-device.sh tests bench
set -euo pipefail
MODULE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$MODULE/.." && pwd)"
DEST="$(mkdir -p "${1:-$ROOT/.device}" && cd "${1:-$ROOT/.device}" && pwd)"
source "$ROOT/scripts/find-jdk.sh"
JUNIT_CONSOLE=org.junit.platform:junit-platform-console-standalone:1.14.1

cd "$ROOT"
rm -rf "$DEST/lib" "$DEST/test" "$DEST/junit" "$DEST/bench"
mkdir -p "$DEST/lib" "$DEST/test" "$DEST/junit" "$DEST/bench"
# One reactor run (so kvmix-core comes from this checkout, not ~/.m2): the jars, then the third-party
# runtime jars + slf4j-simple (test scope) for log lines; JUnit itself comes with the console launcher.
mvn -q -B -pl kvmix-cuda -am package dependency:copy-dependencies -DskipTests -DincludeScope=test \
    -DoutputDirectory="$DEST/lib" -DexcludeGroupIds=io.kvmix,org.junit.jupiter,org.junit.platform,org.opentest4j,org.apiguardian
cp kvmix-core/target/kvmix-core-*.jar kvmix-cuda/target/kvmix-cuda-*.jar "$DEST/lib/"
# jcuda-natives is 9.5 MB, mostly libraries the driver API never loads (NVPTX compiler, runtime, NVRTC):
# keep only libJCudaDriver so the carried folder stays well inside the device tool's 64 MiB.
natives="$(ls "$DEST"/lib/jcuda-natives-*.jar)"
tmp="$(mktemp -d)"
(cd "$tmp" && "$JAVA_HOME/bin/jar" --extract --file "$natives" && find lib -type f ! -name 'libJCudaDriver-*' -delete \
    && rm "$natives" && "$JAVA_HOME/bin/jar" --create --file "$natives" -C "$tmp" .)
rm -rf "$tmp"
"$JAVA_HOME/bin/jar" --create --file "$DEST/test/kvmix-cuda-tests.jar" -C kvmix-cuda/target/test-classes .
mvn -q -B dependency:copy -Dartifact="$JUNIT_CONSOLE" -DoutputDirectory="$DEST/junit"
cp kvmix-cuda/bench/sdpa_baseline.py "$DEST/bench/"
cp kvmix-cuda/scripts/run-on-device.sh "$DEST/"
# The runtime as one xz tar (~15 MiB): modules stored uncompressed by jlink and native libraries stripped
# compress far better as a whole than ../shared/device/make-jre.sh's .tgz (~28 MiB), which would leave the
# checkout plus this folder over the device tool's 64 MiB.
if [ ! -f "$DEST/jre25.txz" ]; then
    rm -f "$DEST/jre25.tgz"
    jre="$(mktemp -d)"
    "$JAVA_HOME/bin/jlink" --add-modules java.base,java.logging,java.sql,java.management,java.naming,jdk.unsupported,jdk.incubator.vector,jdk.zipfs \
        --strip-debug --no-header-files --no-man-pages --compress=zip-0 --output "$jre/jre" 2>&1 | grep -v 'incubator modules' || true
    find "$jre/jre" -name '*.so' -exec strip --strip-unneeded {} +
    XZ_OPT=-9 tar cJf "$DEST/jre25.txz" -C "$jre" jre
    rm -rf "$jre"
fi
du -sh "$DEST"
