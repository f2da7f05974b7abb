#!/usr/bin/env bash
# Regenerates the exact pins in requirements*.txt from pyproject.toml's ranges, for every
# Python from 3.11 up (one universal lock per file). Needs uv: `pip install uv`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || { echo "error: uv is not installed; install it with: pip install uv" >&2; exit 2; }
compile() {
  uv pip compile pyproject.toml --universal --python-version 3.11 --quiet --upgrade \
    --custom-compile-command scripts/update_requirements.sh --annotation-style line --output-file "$@"
}
compile requirements.txt
compile requirements-test.txt --extra test
compile requirements-prepare.txt --extra prepare
echo "updated requirements.txt, requirements-test.txt, requirements-prepare.txt"
