#!/usr/bin/env bash
# Builds CAF's core library (the Debian version, 0.17.6) with ThreadSanitizer
# for scripts/sanitize.sh tsan, from Debian's own source package: Debian's
# libcaf_core is not instrumented, so TSan cannot see a message handed from
# one CAF worker to another and reports that hand-off as a race in every
# actor test. Only the shared library is built (about 3 minutes on 2 cores);
# the installed headers are used as they are (the generated build_config.hpp
# is the same: CAF_LOG_LEVEL QUIET). Prints the directory holding the library.
#   scripts/sanitizers/caf-tsan.sh <work dir>
set -euo pipefail
work=$1
lib=$work/build/lib
if [ -e "$lib/libcaf_core.so.0.17.6" ]; then echo "$lib"; exit 0; fi
version=$(dpkg-query -W -f='${Version}' libcaf-dev)
case "$version" in 0.17.6-*) ;; *) echo "caf-tsan: libcaf-dev is $version, not 0.17.6" >&2; exit 1 ;; esac
mkdir -p "$work"
cd "$work"
if [ ! -e actor-framework_0.17.6.orig.tar.gz ]; then
  if ! apt-cache showsrc actor-framework >/dev/null 2>&1 || [ -z "$(apt-cache showsrc actor-framework 2>/dev/null)" ]; then
    # Debian's source packages, from the same archive as the binary ones.
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/outpost-src.sources
    apt-get update -qq >&2
  fi
  # Only the upstream tarball is needed (Debian's patches touch packaging and
  # the tests, not libcaf_core): a missing debian.tar.xz is not an error here.
  apt-get source --download-only "actor-framework=${version%%+b*}" >&2 || true  # a binNMU (+bN) has its source's version
  [ -e actor-framework_0.17.6.orig.tar.gz ] || { echo "caf-tsan: no source tarball from Debian" >&2; exit 1; }
fi
rm -rf src build
mkdir src
tar xzf actor-framework_0.17.6.orig.tar.gz -C src --strip-components=1
cmake -S src -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="-fsanitize=thread -O1 -g1" \
  -DCAF_NO_IO=yes -DCAF_NO_EXAMPLES=yes -DCAF_NO_UNIT_TESTS=yes -DCAF_NO_TOOLS=yes -DCAF_NO_OPENSSL=yes \
  -DCAF_NO_PYTHON=yes -DCAF_NO_OPENCL=yes -DCAF_NO_COMPILER_CHECK=yes -DCAF_LOG_LEVEL=QUIET >&2
cmake --build build -j2 --target libcaf_core_shared >&2
cmp -s build/libcaf_core/caf/detail/build_config.hpp /usr/include/caf/detail/build_config.hpp ||
  { echo "caf-tsan: this build's build_config.hpp differs from the installed one" >&2; exit 1; }
echo "$lib"
