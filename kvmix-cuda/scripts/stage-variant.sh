#!/usr/bin/env bash
# Stages the kvmix-cuda jar of another commit as a benchmark variant, so that one device call can time it
# side by side with the working tree (run-on-device.sh's `variants` task): builds kvmix-cuda at COMMIT in a
# temporary git worktree and writes <repo>/.device/variants/NAME.jar (NAME defaults to the short commit).
# Only the sm_90 PTX is kept (the device machine's H100/H200; ~1 MiB per variant of the 64 MiB carry).
# A variant runs with the staged kvmix-core and third-party jars, so it must agree with them.
#
# Usage: kvmix-cuda/scripts/stage-variant.sh COMMIT [NAME]      (after stage-device.sh)
#        rm -rf .device/variants                                (to drop them)
set -euo pipefail
MODULE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$MODULE/.." && pwd)"
source "$ROOT/scripts/find-jdk.sh"
commit="$(git -C "$ROOT" rev-parse --verify "${1:?usage: stage-variant.sh COMMIT [NAME]}^{commit}")"
name="${2:-$(git -C "$ROOT" rev-parse --short "$commit")}"
tree="$(mktemp -d)"
trap 'git -C "$ROOT" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git -C "$ROOT" worktree add --detach --force -q "$tree" "$commit"
(cd "$tree" && mvn -q -B -pl kvmix-cuda -am package -DskipTests)
mkdir -p "$ROOT/.device/variants"
jar="$ROOT/.device/variants/$name.jar"
cp "$tree"/kvmix-cuda/target/kvmix-cuda-*.jar "$jar"
command -v zip >/dev/null || { echo "stage-variant.sh needs zip (apt-get install zip)" >&2; exit 1; }
zip -q -d "$jar" 'io/kvmix/cuda/ptx/*.sm_80.ptx'
echo "staged $jar ($(du -h "$jar" | cut -f1)) from $commit"
