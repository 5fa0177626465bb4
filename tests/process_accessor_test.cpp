// accessor="process": a process's memory by pid, through /proc/PID/mem and
// its maps, read by read_file() and sent by upload(). The process read is
// this test's own, so the bytes are ones the test put there. And
// accessor="scope": a variable's value as the data.

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>

#include "queries/engine.hpp"
#include "queries/uploads.hpp"
#include "schemas/codec.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

std::string self() { return "/" + std::to_string(::getpid()); }
std::string address_of(const std::string& s) { return std::to_string(reinterpret_cast<uintptr_t>(s.data())); }

TEST(ProcessAccessor, ReadFileReadsMemoryAtAnAddress) {
  std::string marker = "outpost-marker-" + std::to_string(::getpid()) + std::string(64, 'm');
  auto rows = json_lines(run_rows(default_registry(),
                                  "SELECT read_file(accessor='process', filename='" + self() +
                                      "', offset=" + address_of(marker) + ", length=20) AS M FROM scope()"));
  EXPECT_EQ(rows, std::vector<std::string>{"{\"M\":\"" + marker.substr(0, 20) + "\"}"});
  // An address nothing is mapped at reads as nothing.
  EXPECT_EQ(json_lines(run_rows(default_registry(), "SELECT read_file(accessor='process', filename='" + self() +
                                                        "', offset=16, length=4) AS M FROM scope()")),
            std::vector<std::string>{"{\"M\":\"\"}"});
}

// accessor='scope' (Velociraptor's, as Linux.Detection.Yara.Process uploads
// a hit's bytes): the path names a variable with members; its value is the
// data. upload() sends it from a file of the query's own.
TEST(ProcessAccessor, ScopeAccessorReadsAVariablesValueAsTheData) {
  Engine engine(default_registry());
  Env env;
  std::vector<Row> rows;
  auto stream = engine.start(
      "LET Hit = dict(String=dict(Data='the bytes that matched')) "
      "SELECT read_file(accessor='scope', filename='Hit.String.Data') AS R, "
      "upload(accessor='scope', file='Hit.String.Data', name='hit.bin') AS U, "
      "read_file(accessor='scope', filename='Hit.Nothing') AS Missing FROM scope()",
      {}, env);
  while (stream->next(rows, 10).state != Step::State::done) {
  }
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"R\":\"the bytes that matched\",\"U\":{\"Path\":\"hit.bin\",\"Size\":22},"
                              "\"Missing\":\"\"}");
  ASSERT_EQ(env.upload_requests.size(), 1u);
  EXPECT_EQ(env.upload_requests[0].path, "hit.bin");
  std::ifstream sent(env.upload_requests[0].source, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(sent), {}), "the bytes that matched");
}

TEST(ProcessAccessor, UploadSendsTheReadableRangesAndSaysWhereEachIs) {
  std::string marker = "upload-marker-" + std::to_string(::getpid()) + std::string(4096, 'u');
  Engine engine(default_registry());
  Env env;
  std::vector<Row> rows;
  auto stream = engine.start("SELECT upload(accessor='process', file='" + self() + "') AS U FROM scope()", {}, env);
  while (stream->next(rows, 10).state != Step::State::done) {
  }
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_EQ(env.upload_requests.size(), 1u);
  const UploadRequest& request = env.upload_requests[0];
  EXPECT_EQ(request.path, self());
  EXPECT_EQ(request.source, "/proc/" + std::to_string(::getpid()) + "/mem");
  // The marker's address is in one range; the row's Ranges say where it lands in the upload.
  auto at = reinterpret_cast<uintptr_t>(marker.data());
  const Dict* u = rows[0].find("U")->as_dict();
  ASSERT_NE(u, nullptr);
  std::optional<uint64_t> offset;
  for (auto& r : *u->find("Ranges")->as_list()) {
    auto d = r.as_dict();
    auto address = static_cast<uint64_t>(*d->find("Address")->number()), size = static_cast<uint64_t>(*d->find("Size")->number());
    if (at >= address && at < address + size) offset = static_cast<uint64_t>(*d->find("Offset")->number()) + (at - address);
  }
  ASSERT_TRUE(offset) << "the marker's page is not among the readable ranges";

  // Two ranges sent one after another: the marker, then an unmapped page (zeros).
  FileUploader uploader;
  uploader.add({"/m", request.source, {{at, 32}, {4096, 16}}});
  auto chunk = uploader.next_chunk(7);
  ASSERT_TRUE(chunk);
  schemas::RecordView view(chunk->words());
  auto c = view.record().getUploadChunk();
  std::string data(reinterpret_cast<const char*>(c.getData().begin()), c.getData().size());
  EXPECT_EQ(data, marker.substr(0, 32) + std::string(16, '\0'));
  EXPECT_TRUE(c.getEof());
  EXPECT_EQ(c.getTotalSize(), 48u);
  EXPECT_EQ(std::string(c.getPath().cStr()), "/m");
  EXPECT_TRUE(uploader.idle());
}

TEST(ProcessAccessor, ANameThatIsNoProcessIsRefused) {
  std::string error = error_of_run([] {
    Env env;
    default_registry().function("upload")->call(Args("upload", {{"file", Value("/etc/passwd")}, {"accessor", Value("process")}}), env);
  });
  EXPECT_NE(error.find("upload(): file: \"/etc/passwd\" is not a process"), std::string::npos) << error;
  auto rows = json_lines(run_rows(default_registry(), "SELECT upload(accessor='process', file='/999999999') AS U FROM scope()"));
  EXPECT_EQ(rows, std::vector<std::string>{
                      R"({"U":{"Path":"/999999999","Error":"cannot read the memory map of process 999999999"}})"});
}

}  // namespace
}  // namespace outpost::vql
