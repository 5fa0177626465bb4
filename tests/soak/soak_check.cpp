#include "tests/soak/soak_check.hpp"

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>

namespace outpost::soak {

namespace fs = std::filesystem;

namespace {

struct Row {
  uint64_t seq;     // the query's row number (the synthetic source's Seq column)
  uint64_t record;  // the buffer's record seq (the line's "seq")
};

// The number after `key` in `line`, or false.
bool number_after(const std::string& line, const char* key, uint64_t& out) {
  auto at = line.find(key);
  if (at == std::string::npos) return false;
  at += std::char_traits<char>::length(key);
  if (at >= line.size() || line[at] < '0' || line[at] > '9') return false;
  out = 0;
  for (; at < line.size() && line[at] >= '0' && line[at] <= '9'; ++at) out = out * 10 + (line[at] - '0');
  return true;
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());  // one file a day: by name is by time
  return files;
}

class Checker {
 public:
  Checker(const std::vector<Corruption>& corruptions, Verdict& v) : corruptions_(corruptions), v_(v) {}

  void add_stored(uint64_t record) { stored_.insert(record); }
  uint64_t stored() const { return stored_.size(); }

  void check(const std::string& query, int run, const std::vector<Row>& rows, const uint64_t* committed) {
    std::vector<bool> seen;
    uint64_t last = 0, last_record = 0;
    for (const Row& r : rows) {
      if (r.seq < seen.size() && seen[r.seq]) {
        ++v_.duplicated;
        problem(query + ": row " + std::to_string(r.seq) + " stored again (record " + std::to_string(r.record) + ")");
        continue;
      }
      if (seen.size() <= r.seq) seen.resize(r.seq + 1);
      seen[r.seq] = true;
      ++v_.rows;
      if (r.seq < last) {
        ++v_.reordered;
        problem(query + ": row " + std::to_string(r.seq) + " after row " + std::to_string(last));
        continue;
      }
      if (r.seq > last + 1) gap(query, run, last, r.seq, last_record, r.record);
      last = r.seq;
      last_record = r.record;
    }
    if (committed && *committed > last) {
      v_.lost += *committed - last;
      problem(query + ": committed " + std::to_string(*committed) + " rows, stored through row " + std::to_string(last));
    }
  }

 private:
  // Rows after..before (exclusive) are missing; they lay between two records.
  void gap(const std::string& query, int run, uint64_t after, uint64_t before, uint64_t from, uint64_t to) {
    uint64_t rows = before - after - 1;
    std::vector<uint64_t> damaged;
    for (const Corruption& c : corruptions_) {
      if (run > c.run) continue;  // that run's file did not hold this query's rows
      for (uint64_t s = std::max(from, c.stored_max) + 1; s < to; ++s)
        if (!stored_.count(s)) damaged.push_back(s);
    }
    if (damaged.empty()) {
      v_.lost += rows;
      problem(query + ": rows " + std::to_string(after + 1) + ".." + std::to_string(before - 1) +
              " missing between records " + std::to_string(from) + " and " + std::to_string(to) +
              ", and no corruption explains it");
      return;
    }
    v_.lost_to_damage += rows;
    damaged_.insert(damaged.begin(), damaged.end());
    v_.damaged_records = damaged_.size();
  }

  void problem(std::string what) {
    if (v_.problems.size() < 20) v_.problems.push_back(std::move(what));
  }

  const std::vector<Corruption>& corruptions_;
  Verdict& v_;
  std::set<uint64_t> stored_, damaged_;
};

}  // namespace

uint64_t highest_record(const fs::path& agent_dir) {
  uint64_t highest = 0, seq = 0;
  std::error_code ec;
  for (auto& folder : fs::directory_iterator(agent_dir, ec))
    for (auto& file : files_in(folder.path())) {
      std::ifstream in(file);
      for (std::string line; std::getline(in, line);)
        if (number_after(line, "{\"seq\":", seq)) highest = std::max(highest, seq);
    }
  return highest;
}

std::map<std::string, uint64_t> committed_rows(const std::string& log) {
  std::map<std::string, uint64_t> out;
  static const std::regex line("query (\\S+) stopped: \\d+ rows produced, (\\d+) rows committed");
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it)
    out[(*it)[1]] = std::stoull((*it)[2]);
  return out;
}

Verdict verify(const fs::path& agent_dir, const std::vector<Corruption>& corruptions,
               const std::map<std::string, uint64_t>& committed) {
  Verdict v;
  Checker checker(corruptions, v);
  static const std::regex query_name("r(\\d+)q\\d+");
  std::map<std::string, std::pair<int, std::vector<Row>>> queries;
  std::error_code ec;
  for (auto& folder : fs::directory_iterator(agent_dir, ec)) {
    if (!folder.is_directory()) continue;
    std::string name = folder.path().filename().string();
    std::smatch m;
    std::vector<Row>* rows = nullptr;
    if (std::regex_match(name, m, query_name)) {
      auto& q = queries[name];
      q.first = std::stoi(m[1]);
      rows = &q.second;
    }
    for (auto& file : files_in(folder.path())) {
      std::ifstream in(file);
      for (std::string line; std::getline(in, line);) {
        Row r{};
        if (!number_after(line, "{\"seq\":", r.record)) continue;
        checker.add_stored(r.record);
        if (rows && number_after(line, "\"row\":{\"Seq\":", r.seq)) rows->push_back(r);
      }
    }
  }
  v.records = checker.stored();
  v.query_runs = queries.size();
  for (auto& [name, q] : queries) {
    auto c = committed.find(name);
    checker.check(name, q.first, q.second, c == committed.end() ? nullptr : &c->second);
  }
  for (auto& [name, n] : committed)  // a query of the last run that stored nothing at all
    if (n && !queries.count(name)) {
      v.lost += n;
      v.problems.push_back(name + ": committed " + std::to_string(n) + " rows, none stored");
    }
  return v;
}

}  // namespace outpost::soak
