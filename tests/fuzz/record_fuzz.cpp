// libFuzzer target for the bytes of one record (rows.capnp's Record), as the
// agent's buffer reader hands them on (row_count(), then RecordView and
// append_json_lines() in the file link) and as the collector renders an
// uploaded one (render_record()). Any input either decodes or gives
// DecodeError, never a crash, a hang or a leak. Also checked:
//  - append_json_lines() leaves `out` as it was when it throws; it writes one
//    line per row of a batch (row_count()'s count), one for any other record;
//  - a decoded record copied into a message of our own renders the same;
//  - render_record() throws nothing (but bad_alloc), marks what does not
//    decode malformed, renders the same lines otherwise, names files
//    <agent>/<folder>/<day>.jsonl whose parts neither climb nor hide, and an
//    upload chunk's blob holds the chunk's data.
// Run by scripts/fuzz.sh (seeds: corpus/record/).

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "net/collector/collector_store.hpp"
#include "schemas/codec.hpp"
#include "schemas/json.hpp"

namespace {

using namespace outpost;

constexpr uint64_t kSeq = 7;
const std::string kAgent = "fuzz-agent";

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "record_fuzz: %s\n", what.c_str());
  std::abort();
}

// The record's JSON lines; false (and `out` untouched) when it does not render.
bool render(schema::Record::Reader record, std::string& out) {
  const std::string before = "x";
  out = before;
  try {
    schemas::append_json_lines(out, kSeq, record);
  } catch (const schemas::DecodeError&) {
    if (out != before) fail("append_json_lines changed its output and threw");
    return false;
  }
  out.erase(0, before.size());
  return true;
}

// `<agent>/a/b...` with `parts` parts, none empty, none starting with '.'.
void check_path(const std::string& path, size_t parts) {
  size_t n = 0;
  for (size_t at = 0; at <= path.size(); ++n) {
    size_t end = std::min(path.find('/', at), path.size());
    if (end == at || path[at] == '.') fail("bad path component in " + path);
    if (n == 0 && path.compare(0, end, kAgent) != 0) fail("path outside the agent's folder: " + path);
    at = end + 1;
  }
  if (n != parts) fail("path of " + std::to_string(n) + " parts: " + path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Word-aligned and zero-padded, as BufferStore::scan() copies a payload.
  auto words = kj::heapArray<capnp::word>((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  if (size) std::memcpy(words.begin(), data, size);
  uint64_t rows = schemas::row_count(words);
  // The collector's rendering, from the bytes as they came (in place when
  // whole words, else copied). What it finds would render to far more than
  // its size is not rendered here either (the agent renders only records of
  // its own): a few bytes can claim millions of empty values.
  net::IncomingRecord in{kSeq, kj::arrayPtr(data, size)};
  net::RenderedRecord out = net::render_record(kAgent, schemas::Lane::RESULTS, in);
  bool huge = out.malformed && out.lines.find("would render to far more JSON") != std::string::npos;

  bool decoded = false, rendered = false;
  std::string json;
  std::optional<schemas::RecordView> view;
  try {
    view.emplace(words);
    decoded = true;
  } catch (const schemas::DecodeError&) {
  }
  if (decoded && !huge) {
    auto record = view->record();
    rendered = render(record, json);
    if (rendered) {
      uint64_t lines = std::count(json.begin(), json.end(), '\n');
      uint64_t expected = record.isRowBatch() ? rows : 1;
      if (lines != expected)
        fail(std::to_string(lines) + " JSON lines for a record of " + std::to_string(expected));
      if (!json.empty() && (json.rfind("{\"seq\":7,", 0) != 0 || json.back() != '\n'))
        fail("the JSON does not start or end as it should: " + json);
      // Copied into a message of our own (canonical, one segment), the record
      // must read and render the same. The copy may exceed what is left of
      // the first reader's traversal limit: then there is nothing to compare.
      capnp::MallocMessageBuilder copy;
      bool copied = true;
      try {
        copy.setRoot(record);
      } catch (const kj::Exception&) {
        copied = false;
      }
      if (copied) {
        auto flat = capnp::messageToFlatArray(copy);
        std::string again;
        schemas::RecordView reread(flat);
        if (!render(reread.record(), again) || again != json)
          fail("a copy of the record renders differently:\n" + json + "\n" + again);
        if (schemas::row_count(flat) != rows) fail("a copy of the record counts other rows");
      }
    }
  }

  if (!decoded && !out.malformed) fail("render_record took a record RecordView refuses");
  if (decoded && !huge && !rendered && !out.malformed) fail("render_record took a record that does not render");
  if (!out.malformed && out.lines != json) fail("render_record renders otherwise:\n" + json + "\n" + out.lines);
  check_path(out.file, 3);
  if (!out.blob_file.empty()) {
    check_path(out.blob_file, 4);
    // A fresh reader: the first one's traversal limit may be spent.
    schemas::RecordView fresh(words);
    auto expected = fresh.record().getUploadChunk().getData();
    if (out.blob.size() != expected.size() ||
        (expected.size() && std::memcmp(out.blob.begin(), expected.begin(), expected.size()) != 0))
      fail("an upload chunk's blob is not its data");
  }
  return 0;
}
