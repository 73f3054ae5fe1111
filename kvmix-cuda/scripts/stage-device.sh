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
mvn -q -B -pl kvmix-cuda -am package -DskipTests
rm -rf "$DEST/lib" "$DEST/test" "$DEST/junit" "$DEST/bench"
mkdir -p "$DEST/lib" "$DEST/test" "$DEST/junit" "$DEST/bench"
mvn -q -B -pl kvmix-cuda dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$DEST/lib" \
    -DexcludeArtifactIds=kvmix-core
cp kvmix-core/target/kvmix-core-*.jar kvmix-cuda/target/kvmix-cuda-*.jar "$DEST/lib/"
cp "$(find ~/.m2/repository/org/slf4j/slf4j-simple -name 'slf4j-simple-*.jar' | sort | tail -1)" "$DEST/lib/"
"$JAVA_HOME/bin/jar" --create --file "$DEST/test/kvmix-cuda-tests.jar" -C kvmix-cuda/target/test-classes .
mvn -q -B dependency:copy -Dartifact="$JUNIT_CONSOLE" -DoutputDirectory="$DEST/junit"
cp kvmix-cuda/bench/sdpa_baseline.py "$DEST/bench/"
cp kvmix-cuda/scripts/run-on-device.sh "$DEST/"
[ -f "$DEST/jre25.tgz" ] || "$ROOT/../shared/device/make-jre.sh" "$DEST/jre25.tgz"
du -sh "$DEST"
