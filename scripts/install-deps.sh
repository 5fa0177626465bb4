#!/usr/bin/env bash
# Installs every Debian 12 package Outpost needs to build, test and run. Idempotent.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libcaf-dev
  libcapnp-dev capnproto
  liblmdb-dev lmdb-utils
  libxxhash-dev
  libspdlog-dev libfmt-dev
  libgtest-dev
  libyaml-cpp-dev
  libcli11-dev
  libssl-dev
  libre2-dev
  libexpat1-dev  # parse_xml()
  libsystemd-dev  # parse_journald() and watch_journald() read journal files with sd-journal
  systemd-journal-remote  # the journald tests write journal files with it
  libyara-dev  # yara() and proc_yara()
  libsqlite3-dev  # sqlite()
  libjemalloc-dev  # the collector's allocator (tools/CMakeLists.txt)
  libnats-dev nats-server  # the collector's jetstream storage backend (libnats), and its tests' NATS cluster
  libbpf-dev bpftool clang  # process events from the kernel: eBPF programs built with clang, loaded with libbpf
  libclang-rt-14-dev  # clang's sanitizer and libFuzzer runtimes: the ASan+UBSan tests and the fuzz targets
  libfuse3-dev fuse3  # the close-error tests mount a FUSE filesystem whose every close fails (tests/faulty_fs.cpp)
  tmux  # outpostctl top's tests drive it in a real terminal (send-keys, capture-pane)
  python3  # examples/embed-python (ctypes over the C API), built and run by a package test
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
