#!/usr/bin/env bash
# The sdist builds and passes the tests on its own: extract it into an empty directory, make
# a fresh venv, and run the README's test command there (nothing from this checkout is used).
#
#   tools/sdist_test.sh [dist/linattn-X.Y.Z.tar.gz]     (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/_common.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1
sd="${1:-$(ls dist/linattn-*.tar.gz | tail -1)}"
sd="$(cd "$(dirname "$sd")" && pwd)/$(basename "$sd")"
py="$(find_python "${PYTHON:-python3}")"
d="$(mktemp -d)"
trap 'rm -rf "$d"' EXIT
tar -xzf "$sd" -C "$d"
"$py" -m venv "$d/venv"
cd "$d"/linattn-*/
echo "== $(basename "$sd") in $PWD with $("$d/venv/bin/python" --version) =="
export PATH="$d/venv/bin:$PATH"
unset PYTHONPATH
python -m pip install ".[test]" && python -m pytest -q tests
