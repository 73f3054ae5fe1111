# Sourced by ./kvmix and ./run-tests: exports JAVA_HOME pointing at a JDK >= 25.
# Order: $JAVA_HOME if it is new enough, then Temurin 25's usual place, then any JDK under /usr/lib/jvm.
kvmix_java_major() {
  "$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1
}
kvmix_find_jdk() {
  local candidate major
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major=$(kvmix_java_major "$candidate")
    if [ -n "$major" ] && [ "$major" -ge 25 ] 2>/dev/null; then
      export JAVA_HOME="$candidate"
      return 0
    fi
  done
  echo "kvmix: no JDK >= 25 found (set JAVA_HOME; Temurin 25 is expected at /usr/lib/jvm/temurin-25-jdk-amd64)" >&2
  return 1
}
kvmix_find_jdk
