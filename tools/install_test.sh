#!/usr/bin/env bash
# Install each wheel into a fresh venv of its own Python with no compiler reachable, then
# run the README demo and a smoke subset of the tests against the installed copy:
#
#   tools/install_test.sh dist/*.whl          # (default: every wheel in dist/)
#   PYTHON=/path/to/python3.12 tools/install_test.sh dist/*cp312*.whl   # that interpreter
#
# Per wheel: its size, the shared libraries it carries and `auditwheel show`; every ELF
# file's RPATH must stay inside the wheel ($ORIGIN...).  In the venv: PATH holds only the
# venv and a few shell utilities (no gcc, cc, c++, clang, cmake), CC/CXX point nowhere,
# pip takes binaries only.  After import and one call, every shared library mapped into the
# process must come from the venv, the interpreter's own lib directory or the system
# library directories: a library loaded from a build tree, a source checkout or another
# site-packages (the build machine's scipy-openblas32) fails the test, as does an
# interpreter that cannot import the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
. tools/_common.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1

wheels=("$@")
[ ${#wheels[@]} -gt 0 ] || wheels=(dist/linattn-*.whl)
smoke=(tests/test_info.py tests/test_packaging.py tests/test_cli.py tests/test_linear.py
       tests/test_forms_agree.py tests/test_gufunc_protocol.py)

tools="build/wheel-tools"
tools_venv "$tools" "$(find_python "${PYTHON:-python3}")"
export PATH="$PWD/$tools/bin:$PATH"

# a PATH with shell utilities and nothing that compiles
safebin="$(mktemp -d)/bin"
mkdir -p "$safebin"
for t in sh bash env cat ls rm mkdir cp mv ln uname grep sed head tail find readlink dirname \
         basename tr wc sort uniq mktemp date sleep true false test expr id; do
  p="$(command -v "$t" 2>/dev/null || true)"
  if [ -n "$p" ] && [ "${p:0:1}" = / ]; then ln -sf "$p" "$safebin/$t"; fi
done

fail=0
results=()
for whl in "${wheels[@]}"; do
  whl="$(cd "$(dirname "$whl")" && pwd)/$(basename "$whl")"
  name="$(basename "$whl")"
  tag="$(echo "$name" | sed -E 's/^linattn-[^-]+-(cp3[0-9]+)-.*/\1/')"
  ver="3.${tag#cp3}"
  echo "=================== $name (Python $ver)"
  py=""
  if [ -n "${PYTHON:-}" ] && [ "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
       2>/dev/null)" = "$ver" ]; then
    py="$(command -v "$PYTHON")"      # the interpreter named by PYTHON when it fits the wheel
  fi
  [ -n "$py" ] || py="$(find_python "$ver")" || {
    results+=("$name: FAIL (no Python $ver)"); fail=1; continue; }

  echo "-- size: $("$tools/bin/python" -c "import os,sys; print(f'{os.path.getsize(sys.argv[1]) / 2**20:.2f} MiB')" "$whl")"
  echo "-- auditwheel show"
  auditwheel show "$whl"
  echo "-- shared libraries in the wheel (NEEDED; RPATH)"
  unz="$(mktemp -d)"
  "$tools/bin/python" -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$whl" "$unz"
  static_ok=1
  needed=""
  case "$name" in *-linux_*) echo "   not repaired: $name has no manylinux tag"; static_ok=0 ;; esac
  while IFS= read -r so; do
    needed="$needed,$(patchelf --print-needed "$so" | tr '\n' ',')"
    rp="$(patchelf --print-rpath "$so")"
    echo "   ${so#"$unz"/}: $(patchelf --print-needed "$so" | tr '\n' ' '); RPATH=${rp:-none}"
    IFS=: read -ra parts <<< "$rp"
    for r in "${parts[@]}"; do
      case "$r" in ''|'$ORIGIN'|'$ORIGIN/'*) ;; *) echo "   RPATH $r leaves the wheel"; static_ok=0 ;; esac
    done
  done < <(find "$unz" -name '*.so*' -type f)
  rm -rf "$unz"

  d="$(mktemp -d)"
  "$py" -m venv "$d/venv"
  ok=1
  (
    set -e
    export PATH="$d/venv/bin:$safebin" CC=/nonexistent/cc CXX=/nonexistent/c++ CMAKE=/nonexistent
    unset PYTHONPATH LD_LIBRARY_PATH LD_PRELOAD VIRTUAL_ENV PYTHONHOME
    export PYTHONNOUSERSITE=1
    for c in gcc cc c++ g++ clang cmake; do
      if command -v "$c" >/dev/null 2>&1; then echo "compiler reachable: $c" >&2; exit 1; fi
    done
    python -m pip install -q --only-binary :all: "$whl[plot]" "pytest>=7" "hypothesis>=6" \
      "threadpoolctl>=3.1"
    cd "$d"
    echo "-- python -m linattn info"
    python -m linattn info
    echo "-- python -m linattn demo (README)"
    python -m linattn demo
    test -s linattn-demo.png
    echo "-- libraries mapped into the process"
    python - "$repo" "$needed" <<'PY'
import os, re, sys
import numpy as np  # numpy's own libraries are numpy's business

def mapped():
    with open("/proc/self/maps") as f:
        return {os.path.realpath(p) for p in (ln.split()[-1] for ln in f)
                if p.startswith("/") and ".so" in os.path.basename(p)}

repo = os.path.realpath(sys.argv[1])
venv = os.path.realpath(sys.prefix)
assert venv != os.path.realpath(sys.base_prefix), "not running in a venv"
before = mapped()
import linattn as la
q = np.ones((2, 16, 8), np.float32)
la.causal(q, q, q, kind="elu", mode="chunked")
pkg = os.path.realpath(os.path.dirname(la.__file__))
assert pkg.startswith(venv + os.sep), f"linattn imported from {pkg}, not the venv"
# What importing linattn mapped.  A library the wheel's ELF files name (NEEDED) must come
# from the wheel or be one every manylinux system has; nothing may come from the source
# tree or from a site-packages other than this venv's.  (The stdlib modules the import
# pulls in, and their system libraries, are the interpreter's own.)
needed = {n for n in sys.argv[2].split(",") if n}
ours = (pkg + os.sep, pkg + ".libs" + os.sep)
base = re.compile(r"(libc|libm|libpthread|libdl|librt|libgcc_s|ld-linux-[\w-]+)\.so[.\d]*$")
system = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")
bad = []
for p in sorted(mapped() - before):
    name = os.path.basename(p)
    named = any(name == n or name.startswith(n + ".") for n in needed)
    if p.startswith(ours):
        where = "wheel"
    elif p.startswith(repo + os.sep) or (
            ("site-packages" in p or "dist-packages" in p) and not p.startswith(venv + os.sep)):
        where = "BUILD MACHINE"
    elif named:
        where = "system" if p.startswith(system) and base.match(name) else "BUILD MACHINE"
    else:
        continue
    if where == "BUILD MACHINE":
        bad.append(p)
    print(f"   {where:<13} {p}")
if bad:
    sys.exit(f"import linattn loaded libraries from outside the wheel: {bad}")
print(f"   every library that import linattn mapped comes from the wheel or the base system")
PY
    echo "-- smoke tests"
    cd "$repo"
    python -m pytest -q -p no:cacheprovider "${smoke[@]}"
  ) || ok=0
  rm -rf "$d"
  if [ "$ok" = 1 ] && [ "$static_ok" = 1 ]; then
    results+=("$name: PASS"); else results+=("$name: FAIL"); fail=1
  fi
done
rm -rf "$(dirname "$safebin")"
echo "=================== install tests"
printf '%s\n' "${results[@]}"
exit $fail
