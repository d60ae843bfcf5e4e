#!/usr/bin/env bash
# Fetch the JARs listed in LIST (group:artifact:version sha256 per line) from Maven Central into DIR, each checked
# against its sha256; a JAR already there with the right sum is kept. Usage: infra/fetch_jars.sh LIST DIR
set -euo pipefail
LIST=$1
DIR=$2
REPOSITORY=${MAVEN_REPOSITORY:-https://repo1.maven.org/maven2}
mkdir -p "$DIR"
grep -v '^\s*#' "$LIST" | while read -r coordinates sum; do
  [ -n "$coordinates" ] || continue
  IFS=: read -r group artifact version <<<"$coordinates"
  jar="$DIR/$artifact-$version.jar"
  if [ -f "$jar" ] && echo "$sum  $jar" | sha256sum --check --quiet 2>/dev/null; then
    continue
  fi
  url="$REPOSITORY/${group//.//}/$artifact/$version/$artifact-$version.jar"
  curl -fsSL --retry 3 -o "$jar.part" "$url" || { echo "fetch_jars: cannot download $url" >&2; exit 1; }
  if ! echo "$sum  $jar.part" | sha256sum --check --quiet; then
    rm -f "$jar.part"
    echo "fetch_jars: $coordinates from $url does not have the pinned sha256 $sum" >&2
    exit 1
  fi
  mv "$jar.part" "$jar"
  echo "fetch_jars: $coordinates -> $jar"
done
