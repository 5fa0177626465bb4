#!/usr/bin/env bash
# What a vendor does with Outpost: install the build into a prefix, build
# examples/embed-cpp out of tree against it, once with liboutpost.so and once
# with liboutpost.a, and run both; the same for examples/embed-c (the C API,
# liboutpost.so) and examples/embed-python (ctypes over it); then compile and run a program with the flags pkg-config
# gives for outpost and for outpost-static.
# Run by ctest: package_install_check.sh CMAKE BUILD_DIR SOURCE_DIR CXX LIBDIR
set -euo pipefail
cmake=$1 build=$2 source=$3 cxx=$4 libdir=$5

work=$(mktemp -d "${TMPDIR:-/tmp}/outpost-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
# Each step's output is shown only when it fails.
step() {
  echo "== $*"
  if ! "$@" >"$work/step.log" 2>&1; then
    cat "$work/step.log"
    echo "FAILED: $*"
    exit 1
  fi
}

step "$cmake" --install "$build" --prefix "$prefix"

for variant in shared static; do
  static=OFF
  [ $variant = static ] && static=ON
  # Only the prefix may provide Outpost: not the build tree, not a package registry.
  step "$cmake" -S "$source/examples/embed-cpp" -B "$work/$variant" -DCMAKE_PREFIX_PATH="$prefix" \
       -DCMAKE_CXX_COMPILER="$cxx" -DEMBED_STATIC=$static -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
  found=$(sed -n 's/^Outpost_DIR:PATH=//p' "$work/$variant/CMakeCache.txt")
  if [ "$found" != "$prefix/$libdir/cmake/Outpost" ]; then
    echo "FAILED: the $variant example found Outpost in '$found', not in $prefix"
    exit 1
  fi
  step "$cmake" --build "$work/$variant"
  step "$work/$variant/embed-cpp" "$work/run-$variant"
done

# The C host (examples/embed-c): C only, against liboutpost.so.
step "$cmake" -S "$source/examples/embed-c" -B "$work/c" -DCMAKE_PREFIX_PATH="$prefix" \
     -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
step "$cmake" --build "$work/c"
step "$work/c/embed-c" "$work/run-c"

# The Python host (examples/embed-python): ctypes over the C API of the installed library.
step python3 "$source/examples/embed-python/embed.py" "$prefix/$libdir/liboutpost.so" "$work/run-py"

export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
cat >"$work/pc.cpp" <<'CPP'
#include <outpost/outpost.hpp>

#include <iostream>

int main() {
  outpost::Agent agent({});
  auto check = agent.check();
  std::cout << outpost::to_string(check.code) << " " << check.message << "\n";
  return check ? 0 : 1;
}
CPP
for module in outpost outpost-static; do
  # shellcheck disable=SC2046  # pkg-config's flags are meant to be split
  step "$cxx" -std=c++17 -o "$work/pc-$module" "$work/pc.cpp" $(pkg-config --cflags --libs $module)
  step env LD_LIBRARY_PATH="$prefix/$libdir" "$work/pc-$module"
done
if ldd "$work/pc-outpost-static" | grep -q liboutpost; then
  echo "FAILED: the outpost-static program needs liboutpost.so"
  exit 1
fi
echo "ok: the install at a prefix builds and runs the examples (liboutpost.so, liboutpost.a) and pkg-config's programs"
