// libFuzzer target for an upload as the collector takes it from an agent:
// two flat messages back to back, read with the collector's wire limits, the
// hello's AgentInfo (its claimedId names the agent, as without TLS) and
// Session.upload's params. Then the checks of CollectorImpl::hello (private
// in collector_server.cpp: the version and valid_agent_id(), repeated here),
// take_upload() as SessionImpl::upload calls it, render_record() as the
// render thread calls it, and CollectorStore::store() on a real store. Never a crash, a hang or a leak; what is refused is
// refused as on the wire (a kj::Exception, a violation, a refused or failed
// UploadResult). Also checked: rendered files stay in the agent's folder; a
// stored upload moves the mark to its last seq; stored again, it is all
// duplicates (exactly once). Each run is an agent of its own (id-<run>), so
// it meets a fresh mark and can be repeated; the store, in a mkdtemp
// directory under $TMPDIR (a tmpfs is fastest), is emptied every
// kRunsPerStore runs. Run by scripts/fuzz.sh (seeds: corpus/upload/).

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "net/collector/collector_store.hpp"
#include "persistence/errors.hpp"
#include "schemas/protocol.capnp.h"

namespace {

using namespace outpost;
namespace fs = std::filesystem;

constexpr uint64_t kRunsPerStore = 1000;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "upload_fuzz: %s\n", what.c_str());
  std::abort();
}

// As collector_server.cpp's wire_limits().
const capnp::ReaderOptions kWireLimits{(protocol::MAX_UPLOAD_BYTES + (1 << 20)) / sizeof(capnp::word), 64};

struct Fixture {
  fs::path dir;
  std::unique_ptr<net::CollectorStore> store;
  uint64_t runs = 0;

  Fixture() {
    const char* tmp = std::getenv("TMPDIR");
    std::string name = std::string(tmp && *tmp ? tmp : "/tmp") + "/outpost-upload-fuzz-XXXXXX";
    if (!mkdtemp(name.data())) fail("mkdtemp " + name + ": " + std::strerror(errno));
    dir = name;
  }
  ~Fixture() {
    store.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  net::CollectorStore& next() {
    if (runs++ % kRunsPerStore == 0) {
      store.reset();
      fs::remove_all(dir / "data");
      store = std::make_unique<net::CollectorStore>(dir / "data");
    }
    return *store;
  }
};

// Under the agent's folder, no part empty or starting with '.'.
void check_path(const std::string& path, const std::string& agent) {
  if (path.compare(0, agent.size() + 1, agent + "/") != 0) fail("path outside the agent's folder: " + path);
  for (size_t at = 0, end; at <= path.size(); at = end + 1) {
    end = std::min(path.find('/', at), path.size());
    if (end == at || path[at] == '.') fail("bad path component in " + path);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fixture;
  net::CollectorStore& store = fixture.next();
  auto words = kj::heapArray<capnp::word>((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  if (size) std::memcpy(words.begin(), data, size);

  std::vector<net::Upload> group(1);
  net::Upload& up = group[0];
  try {
    capnp::FlatArrayMessageReader hello(words, kWireLimits);
    auto info = hello.getRoot<protocol::AgentInfo>();
    std::string id = info.getClaimedId().cStr();
    if (info.getMajorVersion() != protocol::MAJOR_VERSION || !net::valid_agent_id(id)) return 0;
    if (id.find('/') != std::string::npos || id[0] == '.') fail("valid_agent_id took " + id);
    // The params lie after the hello; up.records point into them.
    capnp::FlatArrayMessageReader message(kj::ArrayPtr<const capnp::word>(hello.getEnd(), words.end()),
                                          kWireLimits);
    std::string agent = id.substr(0, 100) + "-" + std::to_string(fixture.runs);
    if (!net::take_upload(message.getRoot<protocol::Session::UploadParams>(), agent, up).empty()) return 0;
  } catch (const kj::Exception&) {
    return 0;  // a malformed message: the RPC system refuses it
  }

  for (auto& r : up.records) {  // rendered ahead, as StorageWorker's render thread does
    auto& rendered = up.rendered.emplace_back(net::render_record(up.agent, up.lane, r));
    check_path(rendered.file, up.agent);
    if (!rendered.blob_file.empty()) check_path(rendered.blob_file, up.agent);
  }
  net::StoreReport first, again;
  std::vector<net::UploadResult> results, repeated;  // stored once, then again
  try {
    results = store.store(group, &first);
    if (results.size() != 1) fail("one upload, " + std::to_string(results.size()) + " results");
    if (results[0].status != net::UploadStatus::stored) {
      if (results[0].error.empty()) fail("an upload refused or failed without a reason");
      return 0;
    }
    uint64_t last = up.records.empty() ? 0 : up.records.back().seq, mark = results[0].mark;
    if (mark != last) fail("the mark is " + std::to_string(mark) + ", not " + std::to_string(last));
    if (first.stored + first.malformed != up.records.size() || first.duplicates != 0)
      fail("a fresh agent's upload was not stored whole");
    repeated = store.store(group, &again);
  } catch (const persistence::StoreError& e) {
    std::fprintf(stderr, "upload_fuzz: the store failed: %s\n", e.what());
    return 0;
  }
  if (repeated.size() != 1 || repeated[0].status != net::UploadStatus::stored || repeated[0].mark != results[0].mark ||
      again.duplicates != up.records.size() || again.stored + again.malformed != 0)
    fail("an upload stored again was not all duplicates");
  return 0;
}
