// The file plugins (glob, read_file, parse_lines) and functions (hash, stat).

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cctype>
#include <limits>
#include <stdexcept>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "schemas/codec.hpp"

namespace outpost::vql {
namespace {


// ---- glob

// One path component of a pattern: `*`, `?`, `[a-z]`, `[!x]`, `\` escapes;
// or `**`, any number of directories.
class NamePattern {
 public:
  // Throws std::invalid_argument naming the problem.
  explicit NamePattern(std::string_view text) {
    if (text == "**") {
      recursive_ = true;
      return;
    }
    std::string literal;
    for (size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (c == '\\' && i + 1 < text.size()) {
        tokens_.push_back({Token::chr, text[++i]});
      } else if (c == '*') {
        if (tokens_.empty() || tokens_.back().kind != Token::star) tokens_.push_back({Token::star});
      } else if (c == '?') {
        tokens_.push_back({Token::any});
      } else if (c == '[') {
        i = parse_set(text, i);
      } else {
        tokens_.push_back({Token::chr, c});
      }
      if (tokens_.back().kind == Token::chr) literal += tokens_.back().c;
    }
    if (std::all_of(tokens_.begin(), tokens_.end(), [](auto& t) { return t.kind == Token::chr; }))
      literal_ = std::move(literal);
  }

  bool recursive() const { return recursive_; }
  // The name itself when there is no wildcard: looked up, not listed.
  const std::optional<std::string>& literal() const { return literal_; }

  // Each token but `*` takes one byte; on a mismatch `*` retries one byte
  // further: O(name * pattern), no exponential backtracking.
  bool matches(std::string_view name) const {
    size_t t = 0, i = 0, star = std::string::npos, star_i = 0;
    while (i < name.size()) {
      if (t < tokens_.size() && tokens_[t].kind == Token::star) {
        star = t++;
        star_i = i;
      } else if (t < tokens_.size() && one(tokens_[t], static_cast<unsigned char>(name[i]))) {
        ++t;
        ++i;
      } else if (star != std::string::npos) {
        t = star + 1;
        i = ++star_i;
      } else {
        return false;
      }
    }
    while (t < tokens_.size() && tokens_[t].kind == Token::star) ++t;
    return t == tokens_.size();
  }

 private:
  struct Token {
    enum Kind { chr, any, star, set };
    Token(Kind k, char ch = 0) : kind(k), c(ch) {}
    Kind kind;
    char c;
    bool negate = false;
    std::string ranges;  // byte pairs: low, high
  };

  static bool one(const Token& t, unsigned char c) {
    switch (t.kind) {
      case Token::chr: return static_cast<unsigned char>(t.c) == c;
      case Token::any: return true;
      case Token::star: return false;
      case Token::set: break;
    }
    bool in = false;
    for (size_t k = 0; k + 1 < t.ranges.size() && !in; k += 2)
      in = static_cast<unsigned char>(t.ranges[k]) <= c && c <= static_cast<unsigned char>(t.ranges[k + 1]);
    return in != t.negate;
  }

  // `[` at text[i]; returns the index of the closing `]`. As in fnmatch, a
  // `]` first in the set is a member.
  size_t parse_set(std::string_view text, size_t i) {
    Token t{Token::set};
    size_t j = i + 1;
    if (j < text.size() && (text[j] == '!' || text[j] == '^')) {
      t.negate = true;
      ++j;
    }
    for (bool first = true;; first = false, ++j) {
      if (j >= text.size()) throw std::invalid_argument("unterminated [ in " + std::string(text));
      if (text[j] == ']' && !first) break;
      auto member = [&] { return text[j] == '\\' && j + 1 < text.size() ? text[++j] : text[j]; };
      char low = member(), high = low;
      if (j + 2 < text.size() && text[j + 1] == '-' && text[j + 2] != ']') {
        j += 2;
        high = member();
      }
      if (static_cast<unsigned char>(high) < static_cast<unsigned char>(low))
        throw std::invalid_argument("empty range in " + std::string(text));
      t.ranges += low;
      t.ranges += high;
    }
    tokens_.push_back(std::move(t));
    return j;
  }

  std::vector<Token> tokens_;
  bool recursive_ = false;
  std::optional<std::string> literal_;
};

constexpr size_t kMaxPatterns = 1024;

// {a,b} alternatives, nested, expanded before anything else since an
// alternative may hold '/'. Throws std::invalid_argument.
void expand_braces(const std::string& p, std::vector<std::string>& out) {
  size_t open = std::string::npos, close = 0, depth = 0;
  std::vector<size_t> commas;
  for (size_t i = 0; i < p.size() && !close; ++i) {
    if (p[i] == '\\') {
      ++i;
    } else if (p[i] == '{') {
      if (depth++ == 0) open = i;
    } else if (p[i] == '}') {
      if (depth == 0) throw std::invalid_argument("unbalanced } in " + p);
      if (--depth == 0) close = i;
    } else if (p[i] == ',' && depth == 1) {
      commas.push_back(i);
    }
  }
  if (depth > 0) throw std::invalid_argument("unterminated { in " + p);
  if (open == std::string::npos) {
    if (out.size() >= kMaxPatterns) throw std::invalid_argument("more than 1024 patterns");
    out.push_back(p);
    return;
  }
  commas.push_back(close);
  size_t start = open + 1;
  for (size_t end : commas) {
    expand_braces(p.substr(0, open) + p.substr(start, end - start) + p.substr(close + 1), out);
    start = end + 1;
  }
}

using Pattern = std::vector<NamePattern>;

Pattern compile(std::string_view text) {
  Pattern parts;
  for (auto part : split(text, '/')) {
    if (part.empty()) continue;  // a leading, doubled or trailing '/'
    NamePattern name(part);
    if (name.recursive() && !parts.empty() && parts.back().recursive()) continue;  // **/** is **
    parts.push_back(std::move(name));
  }
  if (parts.empty()) throw std::invalid_argument("empty pattern");
  return parts;
}

// All patterns are walked together, a directory once with the set of
// (pattern, parts matched so far) that reach it, so a file several patterns
// match is still visited, and returned, once.
struct GlobOptions {
  bool follow_links = true;    // into symlinked directories (not for `**`: no loops)
  bool one_filesystem = false;  // nothing on another device than the root's
  Value descend;                // a Lambda: a directory's row must make it true to be walked
  bool ext4 = false;            // accessor="ext4": rows of files on ext2/3/4 only, with its Data
};

class GlobStream : public RowStream {
 public:
  GlobStream(std::vector<Pattern> patterns, std::string root, GlobOptions options)
      : patterns_(std::move(patterns)), options_(std::move(options)) {
    struct stat st;
    if (options_.one_filesystem && ::stat(root.c_str(), &st) == 0) root_dev_ = st.st_dev;
    States all;
    for (uint32_t p = 0; p < patterns_.size(); ++p) all.push_back({p, 0});
    stack_.push_back({std::move(root), std::move(all)});
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    size_t added = 0;
    for (int ops = 0; ops < kOpsPerCall && added < budget; ++ops) {
      if (!active_) {
        if (stack_.empty()) return Step::done();
        Dir dir = std::move(stack_.back());
        stack_.pop_back();
        enter(std::move(dir));
      } else if (listing_) {
        read_entry();
      } else if (next_entry_ < entries_.size()) {
        added += visit(entries_[next_entry_++], out, ops);
      } else {
        // Depth first, subdirectories in name order.
        stack_.insert(stack_.end(), std::make_move_iterator(subdirs_.rbegin()),
                      std::make_move_iterator(subdirs_.rend()));
        subdirs_.clear();
        active_ = false;
      }
    }
    return Step::more();
  }

 private:
  using State = std::pair<uint32_t, uint32_t>;  // pattern, parts matched
  using States = std::vector<State>;
  struct Dir {
    std::string path;
    States states;
  };
  struct Entry {
    std::string name;
    unsigned char type;  // DT_*; DT_UNKNOWN until lstat says
  };
  static constexpr int kOpsPerCall = 256;

  const NamePattern& part(State s) const { return patterns_[s.first][s.second]; }

  void enter(Dir dir) {
    current_ = std::move(dir);
    active_ = true;
    entries_.clear();
    next_entry_ = 0;
    // Only names to look up: no listing (of /proc for /proc/self/status, or
    // of a directory that is searchable but not readable).
    if (std::all_of(current_.states.begin(), current_.states.end(),
                    [&](State s) { return part(s).literal().has_value(); })) {
      for (State s : current_.states) entries_.push_back({*part(s).literal(), DT_UNKNOWN});
      std::sort(entries_.begin(), entries_.end(), [](auto& a, auto& b) { return a.name < b.name; });
      entries_.erase(std::unique(entries_.begin(), entries_.end(),
                                 [](auto& a, auto& b) { return a.name == b.name; }),
                     entries_.end());
      return;
    }
    dir_.reset(::opendir(current_.path.c_str()));  // unreadable or gone: nothing in it
    listing_ = dir_ != nullptr;
  }

  void read_entry() {
    dirent* entry = ::readdir(dir_.get());
    if (!entry) {
      dir_.reset();
      listing_ = false;
      std::sort(entries_.begin(), entries_.end(), [](auto& a, auto& b) { return a.name < b.name; });
      return;
    }
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") entries_.push_back({std::string(name), entry->d_type});
  }

  // `next` gets the states that go on below the entry; `through_link` those
  // that may follow a symlinked directory: not `**`, so no loop.
  void step(State s, const std::string& name, States& next, States& through_link, bool& matched) const {
    const auto& parts = patterns_[s.first];
    bool last = s.second + 1 == parts.size();
    if (part(s).recursive()) {
      next.push_back(s);  // `**` took this name and may take more
      if (last)
        matched = true;
      else
        step({s.first, s.second + 1}, name, next, through_link, matched);  // or took none
    } else if (part(s).matches(name)) {
      if (last) {
        matched = true;
      } else {
        next.push_back({s.first, s.second + 1});
        through_link.push_back({s.first, s.second + 1});
      }
    }
  }

  size_t visit(const Entry& entry, std::vector<Row>& out, int& ops) {
    States next, through_link;
    bool matched = false;
    for (State s : current_.states) step(s, entry.name, next, through_link, matched);
    if (!matched && next.empty()) return 0;

    std::string path = current_.path == "/" ? "/" + entry.name : current_.path + "/" + entry.name;
    struct stat st;
    unsigned char type = entry.type;
    if (matched || type == DT_UNKNOWN) {
      ++ops;
      if (::lstat(path.c_str(), &st) != 0) return 0;  // gone, or a looked-up name that is not there
      type = IFTODT(st.st_mode);
    }
    States& below = type == DT_DIR ? next : through_link;
    if ((type == DT_DIR || (type == DT_LNK && options_.follow_links)) && !below.empty() &&
        descend(path, entry.name, st, matched || entry.type == DT_UNKNOWN, ops)) {
      std::sort(below.begin(), below.end());
      below.erase(std::unique(below.begin(), below.end()), below.end());
      subdirs_.push_back({path, std::move(below)});
    }
    if (!matched) return 0;
    if (!options_.ext4) {
      out.push_back(file_info_row(path, entry.name, st, fs_types_));
      return 1;
    }
    auto row = ext4_info_row(path, entry.name, st, fs_types_);
    if (!row) return 0;
    out.push_back(std::move(*row));
    return 1;
  }

  // Whether to walk into `path` (a directory, or a link to one): on the
  // root's filesystem if asked, and where the recursion callback says so.
  bool descend(const std::string& path, const std::string& name, struct stat& st, bool have_stat, int& ops) {
    auto callback = dynamic_cast<const Lambda*>(options_.descend.as_object());
    if (!root_dev_ && !callback) return true;
    if (!have_stat) {
      ++ops;
      if (::lstat(path.c_str(), &st) != 0) return false;
    }
    if (root_dev_) {
      struct stat target = st;
      if (S_ISLNK(st.st_mode) && ::stat(path.c_str(), &target) != 0) return false;
      if (target.st_dev != *root_dev_) return false;
    }
    return !callback || truthy(callback->call(Value(file_info_row(path, name, st, fs_types_))));
  }

  std::vector<Pattern> patterns_;
  GlobOptions options_;
  std::optional<dev_t> root_dev_;
  FsTypes fs_types_;
  std::vector<Dir> stack_;
  Dir current_;
  bool active_ = false, listing_ = false;
  DirPtr dir_;
  std::vector<Entry> entries_;
  size_t next_entry_ = 0;
  std::vector<Dir> subdirs_;
};

// The patterns, each compiled; QueryError naming the problem.
std::vector<Pattern> glob_patterns(const Args& args) {
  std::vector<Pattern> patterns;
  try {
    std::vector<std::string> expanded;
    for (auto& glob : args.strings("globs")) {
      if (glob.find('\0') != std::string::npos) throw std::invalid_argument("NUL in pattern");
      expand_braces(glob, expanded);
    }
    for (auto& pattern : expanded) patterns.push_back(compile(pattern));
  } catch (const std::invalid_argument& e) {
    args.fail("globs", e.what());
  }
  return patterns;
}

void check_glob(const Args& args) {
  if (args.find("globs")) glob_patterns(args);
  args.string("root");
  accessor_of(args, {Accessor::ext4});
}

std::unique_ptr<RowStream> make_glob(const Args& args, Env&) {
  args.require("globs");
  // Without root, a relative pattern is relative to "/", never to the agent's cwd.
  std::string root = args.string("root").value_or("/");
  if (root.empty()) root = "/";
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  GlobOptions options;
  options.ext4 = accessor_of(args, {Accessor::ext4}) == Accessor::ext4;
  options.follow_links = !args.boolean("nosymlink").value_or(false);
  options.one_filesystem = args.boolean("one_filesystem").value_or(false);
  if (auto callback = args.find("recursion_callback")) {
    if (!dynamic_cast<const Lambda*>(callback->as_object())) args.fail("recursion_callback", "expected a lambda");
    options.descend = *callback;
  }
  return std::make_unique<GlobStream>(glob_patterns(args), std::move(root), std::move(options));
}

// ---- read_file

constexpr size_t kSliceBytes = size_t{1} << 20;
// Data in one read_file row: a longer read is split into rows of this size,
// each with the Offset it starts at, so that no row comes near the record-size
// limit (a row above it would be refused after all the reading).
constexpr size_t kMaxRowData = size_t{1} << 20;
static_assert(kMaxRowData <= schemas::kMaxRecordBytes / 4, "a read_file row must stay far below a record");
constexpr int64_t kMaxReadLength = int64_t{64} << 20;

// Why a file cannot be read, for the row's Error: the errno's message, and
// what it means for this plugin.
std::string read_error(int error) {
  switch (error) {
    case EISDIR: return "a directory";
    case ESPIPE: return "not seekable (a FIFO or socket): cannot read at an offset";
    case EAGAIN: return "no data without waiting (a FIFO or device)";
    default: return errno_message(error);
  }
}

// A file's bytes in rows of at most kMaxRowData, read over several calls,
// kSliceBytes at most per call. A file that cannot be opened or read gives a
// row with its Error (and the rows of what was read before).
class ReadFileStream : public RowStream {
 public:
  ReadFileStream(std::vector<std::string> files, int64_t offset, int64_t length)
      : files_(std::move(files)), offset_(offset), length_(static_cast<size_t>(length)) {}
  ~ReadFileStream() noexcept override { close_file(fd_); }

  Step next(std::vector<Row>& out, size_t budget) override {
    size_t slice = kSliceBytes, added = 0;
    for (int opens = 0; index_ < files_.size() && added < budget;) {
      if (!error_.empty()) {
        add(out, added, std::exchange(error_, std::string()));
        continue;
      }
      if (fd_ == nullptr) {
        if (opens++ == 64) return Step::more();
        fd_ = open_read(files_[index_]);
        data_.clear();
        done_ = 0;
        rows_ = 0;
        if (fd_ == nullptr) {
          add(out, added, "cannot open: " + errno_message(errno));
          continue;
        }
      }
      if (done_ + data_.size() < length_ && data_.size() < kMaxRowData) {
        if (slice == 0) return Step::more();
        size_t old = data_.size(), want = std::min({length_ - done_ - old, kMaxRowData - old, slice});
        data_.resize(old + want);
        ssize_t n;
        do n = ::pread(fd_.get(), data_.data() + old, want, offset_ + static_cast<off_t>(done_ + old));
        while (n < 0 && errno == EINTR);
        if (n < 0) {
          int error = errno;
          data_.resize(old);
          if (!data_.empty()) add(out, added, "");  // what was read; the error in the next row
          error_ = "read at offset " + std::to_string(offset_ + static_cast<int64_t>(done_)) + ": " +
                   read_error(error);
          continue;
        }
        data_.resize(old + static_cast<size_t>(n));
        slice -= std::min(slice, std::max<size_t>(static_cast<size_t>(n), 1));
        if (n > 0) continue;
        // The end of the file: its last row (an empty one if nothing was there).
        if (!data_.empty() || rows_ == 0) add(out, added, "");
        end_file();
        continue;
      }
      add(out, added, "");  // a row's worth, or the length reached
      if (done_ >= length_) end_file();
    }
    return index_ < files_.size() ? Step::more() : Step::done();
  }

 private:
  // A row of the data gathered; with an error, the file's last.
  void add(std::vector<Row>& out, size_t& added, const std::string& error) {
    Row row;
    row.set("Filename", files_[index_]);
    row.set("Offset", offset_ + static_cast<int64_t>(done_));
    done_ += data_.size();
    row.set("Data", std::exchange(data_, std::string()));
    row.set("Error", error);
    out.push_back(std::move(row));
    ++added;
    ++rows_;
    if (!error.empty()) end_file();
  }
  void end_file() {
    close_file(fd_);  // read to its end or failed: a close error adds nothing
    data_ = std::string();
    ++index_;
  }

  std::vector<std::string> files_;
  int64_t offset_;
  size_t length_;
  size_t index_ = 0;
  kj::AutoCloseFd fd_;
  std::string data_;  // read, not yet in a row
  size_t done_ = 0;   // bytes of this file in rows already
  size_t rows_ = 0;   // of this file
  std::string error_;  // of this file, for its next row
};

// Offset and length, when given, in range.
void check_read_file(const Args& args) {
  int64_t offset = args.integer("offset").value_or(0);
  int64_t length = args.integer("length").value_or(int64_t{1} << 20);
  if (offset < 0) args.fail("offset", "must not be negative, got " + std::to_string(offset));
  if (length < 0 || length > kMaxReadLength)
    args.fail("length", "must be 0 to " + std::to_string(kMaxReadLength) + ", got " + std::to_string(length));
  if (offset > std::numeric_limits<int64_t>::max() - length) args.fail("offset", "too large");
}

std::unique_ptr<RowStream> make_read_file(const Args& args, Env&) {
  args.require("filenames");
  auto files = args.strings("filenames");
  check_read_file(args);
  int64_t offset = args.integer("offset").value_or(0);
  int64_t length = args.integer("length").value_or(int64_t{1} << 20);
  return std::make_unique<ReadFileStream>(std::move(files), offset, length);
}

// ---- hash() and stat()

std::string hex(const unsigned char* bytes, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  return out;
}

// hash()'s state while it reads a file: its size when opened is where it ends.
struct HashWork {
  using Context = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;
  kj::AutoCloseFd fd;
  uint64_t size = 0, hashed = 0;
  std::vector<Context> contexts;
  std::optional<Value> result;
  ~HashWork() noexcept { close_file(fd); }
};

const std::pair<const char*, const EVP_MD*>* digests() {
  static const std::pair<const char*, const EVP_MD*> kDigests[] = {
      {"MD5", EVP_md5()}, {"SHA1", EVP_sha1()}, {"SHA256", EVP_sha256()}};
  return kDigests;
}
constexpr size_t kDigestCount = 3;

Value hash_error(const std::string& path, const std::string& why) {
  Dict out;
  out.set("Path", path);
  out.set("Error", why);
  return Value(std::move(out));
}

// Opens the file and starts the digests; sets `result` instead when the
// file cannot be hashed.
void start_hash(HashWork& h, const std::string& path) {
  h.fd = open_read(path);
  if (h.fd == nullptr) {
    h.result = hash_error(path, "cannot open: " + errno_message(errno));
    return;
  }
  struct stat st;
  if (::fstat(h.fd.get(), &st) != 0) {
    h.result = hash_error(path, "cannot stat: " + errno_message(errno));
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    h.result = hash_error(path, "a directory");
    return;
  }
  if (auto why = not_a_finite_file(h.fd.get()); !why.empty()) {
    h.result = hash_error(path, why);
    return;
  }
  h.size = static_cast<uint64_t>(st.st_size);
  for (size_t i = 0; i < kDigestCount; ++i) {
    h.contexts.emplace_back(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!h.contexts.back() || EVP_DigestInit_ex(h.contexts.back().get(), digests()[i].second, nullptr) != 1)
      throw QueryError(std::string("hash(): cannot start ") + digests()[i].first);
  }
}

// MD5, SHA1 and SHA256 of a regular file as it was when opened (a device like
// /dev/zero would never end: refused). While a row may be taken up again
// (Env::slicing), at most Slicing::kBytesPerCall per call of the query, the
// rest in the next calls (Unfinished); else all at once.
Value hash_file(const Args& args, Env& env) {
  std::string path = required_string(args, "path");
  accessor_of(args, {});
  auto* work = env.slicing.work;
  std::shared_ptr<HashWork> h;
  if (work) {
    auto& slot = (*work)["hash:" + path];
    if (!slot) slot = std::make_shared<HashWork>();
    h = std::static_pointer_cast<HashWork>(slot);
  } else {
    h = std::make_shared<HashWork>();
  }
  if (h->result) return *h->result;
  if (h->fd == nullptr) start_hash(*h, path);
  if (h->result) return *h->result;
  std::string buf;
  while (h->hashed < h->size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(h->size - h->hashed, kSliceBytes));
    if (work) {
      if (env.slicing.budget == 0) throw Unfinished{};
      want = std::min(want, env.slicing.budget);
    }
    buf.resize(want);
    ssize_t n;
    do n = ::pread(h->fd.get(), buf.data(), want, static_cast<off_t>(h->hashed));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      h->result = hash_error(path, "read at offset " + std::to_string(h->hashed) + ": " + errno_message(errno));
      return *h->result;
    }
    if (work) env.slicing.budget -= std::min(env.slicing.budget, std::max<size_t>(static_cast<size_t>(n), 1));
    if (n == 0) break;  // shorter than when opened: what it has
    for (auto& context : h->contexts)
      if (EVP_DigestUpdate(context.get(), buf.data(), static_cast<size_t>(n)) != 1)
        throw QueryError("hash(): digest update failed");
    h->hashed += static_cast<uint64_t>(n);
  }
  Dict out;
  for (size_t i = 0; i < kDigestCount; ++i) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned size = 0;
    if (EVP_DigestFinal_ex(h->contexts[i].get(), digest, &size) != 1) throw QueryError("hash(): digest failed");
    out.set(digests()[i].first, hex(digest, size));
  }
  close_file(h->fd);  // read to its end: a close error adds nothing
  h->result = Value(std::move(out));
  return *h->result;
}

Value stat_file(const Args& args, Env&) {
  std::string path = required_string(args, "filename");
  bool ext4 = accessor_of(args, {Accessor::ext4}) == Accessor::ext4;
  struct stat st;
  if (path.empty() || path.find('\0') != std::string::npos || ::lstat(path.c_str(), &st) != 0)
    return Value();
  std::string_view name = path;
  while (name.size() > 1 && name.back() == '/') name.remove_suffix(1);
  if (name.size() > 1) name = name.substr(name.find_last_of('/') + 1);
  FsTypes fs_types;
  if (!ext4) return Value(file_info_row(path, name, st, fs_types));
  auto row = ext4_info_row(path, name, st, fs_types);
  return row ? Value(std::move(*row)) : Value();
}

}  // namespace

std::unique_ptr<RowStream> logged_line_rows(const std::string& what, const std::string& path,
                                            LineRowStream::Parser parse) {
  try {
    return line_rows(what, path, std::move(parse));
  } catch (const QueryError& e) {
    spdlog::warn("vql: {}", e.what());
    return rows_stream({});
  }
}

void add_linux_file_plugins(Registry& registry) {
  registry.add(PluginSpec{
      "glob",
      "Files matching glob patterns (* ? [a-z] [!x] {a,b} **), sorted, depth first: Name, OSPath, "
      "Mtime, Atime, Ctime, Btime, Size, Mode, IsDir, IsLink, Data, Sys, FullPath.",
      {{"globs", "string or list of strings", true, "the patterns"},
       {"root", "string", false, "where patterns start (default /)"},
       {"accessor", "string", false, "file or auto (the default; the same on Linux), or ext4 (files on ext2/3/4, Data with their inode flags)"},
       {"nosymlink", "bool", false, "do not walk into symlinked directories"},
       {"one_filesystem", "bool", false, "do not walk onto another filesystem than the root's"},
       {"recursion_callback", "lambda", false, "x => ...: walk into directory x only where true"}},
      false, make_glob},
      check_glob);
  registry.add(PluginSpec{
      "read_file",
      "Bytes of files: Filename, Offset, Data, Error. A file's data comes in rows of at most 1 MiB, "
      "each with the Offset it starts at; a file that cannot be read gives a row with its Error "
      "(\"\" when all went well).",
      {{"filenames", "string or list of strings", true, "the files"},
       {"offset", "int", false, "where to start (default 0)"},
       {"length", "int", false, "bytes to read at most (default 1 MiB, at most 64 MiB)"}},
      false, make_read_file},
      check_read_file);
  registry.add(PluginSpec{
      "parse_lines", "A file's lines (cut at 1 MiB): Line.",
      {{"filename", "string", true, "the file (with accessor='data': the text)"},
       {"accessor", "string", false, "file (default) or data"}},
      false,
      [](const Args& args, Env&) -> std::unique_ptr<RowStream> {
        if (accessor_of(args, {Accessor::data}) == Accessor::data) {
          std::vector<Row> rows;
          std::string text = required_string(args, "filename");
          for (size_t at = 0; at < text.size();) {
            size_t end = std::min(text.find('\n', at), text.size());
            Row row;
            row.set("Line", text.substr(at, end - at - (end > at && text[end - 1] == '\r')));
            rows.push_back(std::move(row));
            at = end + 1;
          }
          return rows_stream(std::move(rows));
        }
        return logged_line_rows("parse_lines(): filename", required_string(args, "filename"),
                         [](std::string_view line) -> std::optional<Row> {
                           Row row;
                           row.set("Line", line);
                           return row;
                         });
      }});
  registry.add(FunctionSpec{"hash",
                            "MD5, SHA1 and SHA256 of a regular file, read over several calls when big; "
                            "{Path, Error} when it cannot be hashed (missing, unreadable, a device).",
                            {{"path", "string", true, "the file"},
                             {"accessor", "string", false, "file or auto (the default; the same on Linux)"}},
                            hash_file});
  registry.add(FunctionSpec{"stat", "A file's glob row (lstat), as a dict; NULL if missing.",
                            {{"filename", "string", true, "the file"},
                             {"accessor", "string", false, "file, auto or ext4 (as glob())"}},
                            stat_file});
  registry.add(PluginSpec{"stat", "A file's glob row (lstat); no row if missing.",
                          {{"filename", "string", true, "the file"}, {"accessor", "string", false, "file, auto or ext4 (as glob())"}},
                          false, [](const Args& args, Env& env) -> std::unique_ptr<RowStream> {
                            Value v = stat_file(args, env);
                            std::vector<Row> rows;
                            if (auto d = v.as_dict()) rows.push_back(*d);
                            return rows_stream(std::move(rows));
                          }});
}

}  // namespace outpost::vql
