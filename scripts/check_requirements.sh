#!/usr/bin/env bash
# Checks what featurex needs before anything is installed: Python >= 3.10 and Java 17+.
set -u
python=${1:-python3}
ok=1
if ! command -v "$python" >/dev/null 2>&1; then
  echo "featurex: $python not found: install Python 3.10 or newer (or pass PYTHON=/path/to/python)" >&2
  ok=0
elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "featurex: $("$python" --version 2>&1) is too old: Python 3.10 or newer is required (pass PYTHON=/path/to/python3.11)" >&2
  ok=0
fi
if ! command -v java >/dev/null 2>&1; then
  echo "featurex: java not found: Spark 4 needs Java 17 or newer (e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME and PATH)" >&2
  ok=0
else
  version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\)[^"]*".*/\1/p' | head -n 1)
  if [ -z "$version" ] || [ "$version" -lt 17 ]; then
    echo "featurex: Java ${version:-of unknown version} found; Spark 4 needs Java 17 or newer (set JAVA_HOME to a JDK 17+)" >&2
    ok=0
  fi
fi
[ "$ok" = 1 ]
