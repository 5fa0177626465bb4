// yara() and proc_yara(): Velociraptor's YARA plugins on libyara (4.2).
//
// A scan is sliced: libyara's non-blocking block API (an iterator whose
// next() says ERROR_BLOCK_NOT_READY) scans blocks of at most kBlockBytes,
// about kBytesPerCall per RowStream::next, keeping its matches between
// calls. Blocks overlap by kOverlap bytes, and libyara records a match at
// one offset once, so a match up to kOverlap long that crosses a block's end
// is found. The conditions are evaluated once, after the last block, over
// the whole file or address space, as `yara` sees a file: uint32(0),
// filesize, #a count the file, not a block. Rows come after: the rules
// matched, one row per string match, `number` at most per file.

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
// Not <yara.h>: its modules.h defines macros (parent(), ...) that break C++ headers.
#include <yara/compiler.h>
#include <yara/error.h>
#include <yara/libyara.h>
#include <yara/rules.h>
#include <yara/scan.h>
#include <yara/scanner.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <list>
#include <mutex>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "queries/os_objects.hpp"

namespace outpost::vql {
namespace {

constexpr size_t kBlockBytes = size_t{1} << 20;
// Twice libyara's longest regex or hex match from an atom (YR_RE_SCAN_LIMIT
// each way); a longer match crossing a block's end is missed.
constexpr size_t kOverlap = 2 * YR_RE_SCAN_LIMIT;
static_assert(kOverlap < kBlockBytes, "blocks must advance");
// Bytes scanned, or read for rows' Data, per call; a block is charged at
// least kMinCharge (a small mapping of a process still costs a read).
constexpr size_t kBytesPerCall = Slicing::kBytesPerCall;
constexpr size_t kMinCharge = 4096;
// Bytes the conditions may read after the scan (uint32(x), modules, hashes
// over the data), in blocks; beyond it a read is undefined, as an unmapped one.
constexpr size_t kMaxEvalBytes = size_t{16} << 20;
// A slice of a scan that takes longer than this (a pathological regex or
// condition) ends the file's scan.
constexpr int kCallTimeoutSeconds = 10;
// A readable mapping larger than this is a reservation (a sanitizer's
// shadow: terabytes), not data: reading it would fill the process's page
// tables with the zero page. Not scanned.
constexpr uint64_t kMaxRangeBytes = uint64_t{1} << 40;
// Files opened per call (each an open, fstat, lstat and statfs).
constexpr int kOpensPerCall = 16;

constexpr size_t kMaxRulesBytes = size_t{8} << 20;
constexpr size_t kCachedRules = 4;
constexpr int64_t kMaxNumber = 10000;
constexpr int64_t kMaxContext = 64 << 10;
// Match bytes in a row's Data, as libyara's default YR_CONFIG_MAX_MATCH_DATA
// gives them to Velociraptor.
constexpr uint64_t kMatchData = 512;
constexpr size_t kMaxDataName = 1024;  // accessor='data': the data is its FileName

// ---- libyara and compiled rules

// yr_initialize() once per process, yr_finalize() at exit. Matches keep no
// copy of their data (YR_CONFIG_MAX_MATCH_DATA 0): rows read it from the
// source, and a string's up to 1,000,000 recorded matches cost ~60 bytes each.
class Library {
 public:
  Library() : error_(yr_initialize()) {
    if (!error_) yr_set_configuration_uint32(YR_CONFIG_MAX_MATCH_DATA, 0);
  }
  ~Library() {
    if (!error_) yr_finalize();
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  int error() const { return error_; }

 private:
  int error_;
};

void initialize(const Args& args) {
  static const Library library;  // thread-safe, destroyed after the cache below (built after it)
  if (library.error())
    throw QueryError(args.callee() + "(): cannot initialize libyara: error " + std::to_string(library.error()));
}

// Read-only once compiled: libyara 4.2 keeps a scan's state in its
// YR_SCANNER, so any number of threads may scan with one YR_RULES at once
// (YR_MAX_THREADS, 32, limited yara 3's concurrent scans; 4.x no longer checks it).
using Rules = std::shared_ptr<YR_RULES>;

struct CompilerCloser {
  void operator()(YR_COMPILER* c) const { yr_compiler_destroy(c); }
};

struct CompileError {
  std::string first;
};

void on_compile_error(int level, const char*, int line, const YR_RULE*, const char* message, void* user) {
  auto& error = static_cast<CompileError*>(user)->first;
  if (level == YARA_ERROR_LEVEL_ERROR && error.empty()) error = "line " + std::to_string(line) + ": " + message;
}

// Velociraptor's shorthand "wide nocase ascii: s1, s2": one rule matching
// any of the strings (each taken literally). Other text is YARA source.
std::string expand_shorthand(const std::string& text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  std::string_view rules = first == std::string::npos ? "" : std::string_view(text).substr(first);
  if (rules.substr(0, 4) == "rule" || rules.substr(0, 6) == "import") return text;
  size_t colon = rules.find(':');
  if (colon == std::string_view::npos) return text;
  std::string modifiers;
  for (auto word : split_ws(rules.substr(0, colon))) {
    if (word != "wide" && word != "ascii" && word != "nocase") return text;
    modifiers += " " + std::string(word);
  }
  std::string out = "rule X { strings:";
  int n = 0;
  for (auto item : split(rules.substr(colon + 1), ',')) {
    size_t from = item.find_first_not_of(" \t\r\n"), to = item.find_last_not_of(" \t\r\n");
    item = from == std::string_view::npos ? "" : item.substr(from, to - from + 1);
    out += " $a" + std::to_string(n++) + " = \"";
    for (char c : item) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += "\"" + modifiers + "\n";
  }
  return out + " condition: any of them }";
}

void define_variables(const Args& args, YR_COMPILER* compiler, const Dict& vars) {
  for (auto& [name, v] : vars.items()) {
    int error = ERROR_SUCCESS;
    if (auto i = v.as_int())
      error = yr_compiler_define_integer_variable(compiler, name.c_str(), *i);
    else if (auto b = v.as_bool())
      error = yr_compiler_define_boolean_variable(compiler, name.c_str(), *b);
    else if (auto d = v.as_double())
      error = yr_compiler_define_float_variable(compiler, name.c_str(), *d);
    else if (auto s = v.as_string())
      error = yr_compiler_define_string_variable(compiler, name.c_str(), s->c_str());
    else
      args.fail("vars", name + ": expected an int, bool, float or string, got " + type_name(v));
    if (error) args.fail("vars", name + ": cannot define (libyara error " + std::to_string(error) + ")");
  }
}

Rules compile(const Args& args, const std::string& text, const std::string& ns, const Dict* vars) {
  YR_COMPILER* raw = nullptr;
  if (yr_compiler_create(&raw) != ERROR_SUCCESS) throw QueryError(args.callee() + "(): cannot create a yara compiler");
  std::unique_ptr<YR_COMPILER, CompilerCloser> compiler(raw);
  // `include "/etc/shadow"` would read the agent's files.
  yr_compiler_set_include_callback(compiler.get(), nullptr, nullptr, nullptr);
  CompileError error;
  yr_compiler_set_callback(compiler.get(), on_compile_error, &error);
  if (vars) define_variables(args, compiler.get(), *vars);
  if (yr_compiler_add_string(compiler.get(), text.c_str(), ns.empty() ? nullptr : ns.c_str()) != 0)
    args.fail("rules", error.first.empty() ? "does not compile" : error.first);
  YR_RULES* rules = nullptr;
  if (yr_compiler_get_rules(compiler.get(), &rules) != ERROR_SUCCESS)
    throw QueryError(args.callee() + "(): rules: cannot build the compiled rules");
  return Rules(rules, yr_rules_destroy);
}

// The compiled rules of the call, from the last kCachedRules compiled in
// this process (by a digest of the source, namespace and variables:
// Velociraptor's `key` could name other rules than the text's).
Rules rules_of(const Args& args, const std::string& text) {
  if (text.size() > kMaxRulesBytes) args.fail("rules", "longer than 8 MiB");
  if (text.find('\0') != std::string::npos) args.fail("rules", "contains a NUL byte");
  if (text.compare(0, 4, "YARA") == 0)
    args.fail("rules", "compiled rules are not accepted (libyara does not check them): pass the source");
  std::string ns = args.string("namespace").value_or("");
  const Dict* vars = nullptr;
  if (auto v = args.find("vars"); v && !(vars = v->as_dict()))
    args.fail("vars", std::string("expected a dict, got ") + type_name(*v));
  initialize(args);
  std::string source = expand_shorthand(text);
  std::string key = ns + '\0' + (vars ? to_json(*vars) : "") + '\0' + source;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned size = 0;
  if (EVP_Digest(key.data(), key.size(), digest, &size, EVP_sha256(), nullptr) != 1)
    throw QueryError(args.callee() + "(): cannot digest the rules");
  key.assign(reinterpret_cast<const char*>(digest), size);

  static std::mutex mutex;
  static std::list<std::pair<std::string, Rules>> cache;  // most recent first
  {
    std::lock_guard lock(mutex);
    for (auto it = cache.begin(); it != cache.end(); ++it)
      if (it->first == key) {
        cache.splice(cache.begin(), cache, it);
        return it->second;
      }
  }
  Rules rules = compile(args, source, ns, vars);
  std::lock_guard lock(mutex);
  cache.emplace_front(key, rules);
  if (cache.size() > kCachedRules) cache.pop_back();
  return rules;
}

// ---- a scan

// One row's worth of a match: a string's, or a rule's that matched no string.
struct Hit {
  std::string rule;
  Value meta, tags;
  std::string name;  // "" for a rule's
  uint64_t offset = 0, length = 0;
  bool is_string = false;
};

// What a scan reads: a file, a process's memory (/proc/PID/mem), or the
// text itself (accessor='data').
struct Source {
  std::string name;  // as logged
  Value file_name, file;
  kj::AutoCloseFd fd;
  std::string data;
  bool is_data = false, process = false;
  std::vector<MemoryRange> spans;  // scanned, in order: offsets, or addresses
  std::optional<uint64_t> size;    // yara's filesize; none for a process

  Source() = default;
  Source(Source&&) = default;
  Source& operator=(Source&&) = default;
  ~Source() noexcept { close_file(fd); }  // a file the query named

  // Up to `length` bytes at `offset` into `out` (its buffer reused when big enough).
  void read_into(uint64_t offset, size_t length, std::string& out) const {
    if (is_data) {
      out.assign(offset < data.size() ? std::string_view(data).substr(offset, length) : "");
      return;
    }
    out.resize(length);
    size_t got = 0;
    for (ssize_t n; got < out.size(); got += static_cast<size_t>(n)) {
      do n = ::pread(fd.get(), out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
      while (n < 0 && errno == EINTR);
      if (n <= 0) break;
    }
    out.resize(got);
  }
};

std::string yara_error(int error) {
  switch (error) {
    case ERROR_SCAN_TIMEOUT: return "a slice of the scan took more than " + std::to_string(kCallTimeoutSeconds) + " s";
    case ERROR_INSUFFICIENT_MEMORY: return "out of memory";
    case ERROR_TOO_MANY_MATCHES: return "too many matches";
    default: return "libyara error " + std::to_string(error);
  }
}

// A scan of one source with libyara's non-blocking block iterator: step()
// scans blocks worth `quota` bytes; the last step evaluates the rules and
// leaves the matches in `hits`.
class Scan {
 public:
  Scan(const Rules& rules, Source source, int64_t number, bool fast, const std::string& plugin)
      : rules_(rules), source_(std::move(source)), left_(number), plugin_(plugin) {
    if (yr_scanner_create(rules_.get(), &scanner_) != ERROR_SUCCESS)
      throw QueryError(plugin + "(): cannot create a yara scanner");
    yr_scanner_set_callback(scanner_, on_message, this);
    // NO_TRYCATCH: libyara 4.2 would swap the process's SIGSEGV and SIGBUS
    // handlers around each block, racing other threads (and the agent's
    // crash handler). It guards mapped files; libyara only sees our buffers.
    yr_scanner_set_flags(scanner_, SCAN_FLAGS_REPORT_RULES_MATCHING | SCAN_FLAGS_NO_TRYCATCH |
                                       (fast ? SCAN_FLAGS_FAST_MODE : 0) |
                                       (source_.process ? SCAN_FLAGS_PROCESS_MEMORY : 0));
    iterator_.context = this;
    iterator_.first = first;
    iterator_.next = next;
    iterator_.file_size = source_.size ? file_size : nullptr;
    iterator_.last_error = ERROR_SUCCESS;
    block_.context = this;
    block_.fetch_data = fetch;
  }
  ~Scan() {
    if (phase_ == Phase::scanning && started_) {
      // Suspended: a step that ends in an error frees the matches (destroying
      // the scanner would not).
      phase_ = Phase::aborting;
      yr_scanner_scan_mem_blocks(scanner_, &iterator_);
    }
    yr_scanner_destroy(scanner_);
  }
  Scan(const Scan&) = delete;
  Scan& operator=(const Scan&) = delete;

  bool finished() const { return phase_ == Phase::done; }
  const Source& source() const { return source_; }
  std::vector<Hit>& hits() { return hits_; }

  // Returns the bytes scanned.
  size_t step(size_t quota) {
    quota_ = quota;
    auto now = std::chrono::steady_clock::now();
    if (!started_) started_at_ = now;
    started_ = true;
    // libyara times the whole scan from its first step: this step gets kCallTimeoutSeconds.
    auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(now - started_at_).count();
    yr_scanner_set_timeout(scanner_, static_cast<int>(elapsed) + 1 + kCallTimeoutSeconds);
    int result = yr_scanner_scan_mem_blocks(scanner_, &iterator_);
    if (result == ERROR_BLOCK_NOT_READY) return quota - quota_;
    phase_ = Phase::done;
    if (result != ERROR_SUCCESS)
      spdlog::warn("vql: {}(): {}: {}", plugin_, source_.name, error_.empty() ? yara_error(result) : error_);
    if (eval_capped_)
      spdlog::warn("vql: {}(): {}: the conditions read more than 16 MiB after the scan; the rest read as undefined",
                   plugin_, source_.name);
    if (too_many_)
      spdlog::warn("vql: {}(): {}: a string matched more than {} times; its later matches are not counted",
                   plugin_, source_.name, YR_MAX_STRING_MATCHES);
    return quota - quota_;
  }

 private:
  enum class Phase { scanning, evaluating, aborting, done };
  struct Buffer {
    uint64_t base = 0;
    std::string data;
    bool valid = false;
  };

  // The block at (span_, pos_), or null past the last.
  YR_MEMORY_BLOCK* current() {
    auto& spans = source_.spans;
    while (span_ < spans.size() && pos_ >= spans[span_].length) ++span_, pos_ = 0;
    if (span_ == spans.size()) return nullptr;
    block_.base = spans[span_].start + pos_;
    block_.size = static_cast<size_t>(std::min<uint64_t>(kBlockBytes, spans[span_].length - pos_));
    return &block_;
  }
  void advance() {
    if (source_.spans[span_].length - pos_ > kBlockBytes)
      pos_ += kBlockBytes - kOverlap;
    else
      ++span_, pos_ = 0;
  }
  YR_MEMORY_BLOCK* serve(YR_MEMORY_BLOCK* block) {
    if (!block) {
      phase_ = Phase::evaluating;
      return nullptr;
    }
    quota_ -= std::min(quota_, std::max(block->size, kMinCharge));
    return block;
  }

  static YR_MEMORY_BLOCK* first(YR_MEMORY_BLOCK_ITERATOR* it) {
    auto& s = *static_cast<Scan*>(it->context);
    it->last_error = ERROR_SUCCESS;
    s.span_ = 0;
    s.pos_ = 0;
    return s.phase_ == Phase::scanning ? s.serve(s.current()) : s.current();
  }
  static YR_MEMORY_BLOCK* next(YR_MEMORY_BLOCK_ITERATOR* it) {
    auto& s = *static_cast<Scan*>(it->context);
    it->last_error = ERROR_SUCCESS;
    if (s.phase_ == Phase::aborting) {
      it->last_error = ERROR_INTERNAL_FATAL_ERROR;
      return nullptr;
    }
    if (s.phase_ == Phase::scanning && s.quota_ == 0) {
      it->last_error = ERROR_BLOCK_NOT_READY;  // the next step goes on from here
      return nullptr;
    }
    if (s.span_ < s.source_.spans.size()) s.advance();
    return s.phase_ == Phase::scanning ? s.serve(s.current()) : s.current();
  }
  static uint64_t file_size(YR_MEMORY_BLOCK_ITERATOR* it) { return *static_cast<Scan*>(it->context)->source_.size; }

  // The block's bytes: read while scanning (a short read shortens the
  // block), and again for the conditions, which read at most kMaxEvalBytes.
  // The first block keeps a buffer of its own, filled in place: modules
  // (pe, elf) parse it and keep pointers into it while the conditions read
  // other blocks.
  static const uint8_t* fetch(YR_MEMORY_BLOCK* block) {
    try {  // nothing may be thrown through libyara
      return static_cast<Scan*>(block->context)->fetch_data(block);
    } catch (const std::exception&) {
      return nullptr;  // out of memory: the block is skipped
    }
  }
  const uint8_t* fetch_data(YR_MEMORY_BLOCK* block) {
    if (source_.is_data) return reinterpret_cast<const uint8_t*>(source_.data.data()) + block->base;
    bool scanning = phase_ == Phase::scanning;
    Buffer& b = block->base == source_.spans.front().start ? first_block_ : other_block_;
    if (b.valid && b.base == block->base && b.data.size() >= block->size)
      return reinterpret_cast<const uint8_t*>(b.data.data());
    if (!scanning) {
      if (eval_read_ >= kMaxEvalBytes) {
        eval_capped_ = true;
        return nullptr;
      }
      eval_read_ += block->size;
    }
    b.base = block->base;
    source_.read_into(block->base, block->size, b.data);
    b.valid = !b.data.empty() && (scanning || b.data.size() >= block->size);
    if (!b.valid) return nullptr;
    block->size = b.data.size();
    return reinterpret_cast<const uint8_t*>(b.data.data());
  }

  static int on_message(YR_SCAN_CONTEXT* context, int message, void* data, void* user) {
    auto& s = *static_cast<Scan*>(user);
    if (message == CALLBACK_MSG_TOO_MANY_MATCHES) {
      s.too_many_ = true;
      return CALLBACK_CONTINUE;
    }
    if (message != CALLBACK_MSG_RULE_MATCHING) return CALLBACK_CONTINUE;
    try {
      return s.matched(context, static_cast<YR_RULE*>(data));
    } catch (const std::exception& e) {
      s.error_ = e.what();
      return CALLBACK_ERROR;
    }
  }

  // A row per string match, or one for the rule when none; `number` in all.
  int matched(YR_SCAN_CONTEXT* context, YR_RULE* rule) {
    Hit hit;
    hit.rule = rule->identifier;
    Dict meta;
    const YR_META* m;
    yr_rule_metas_foreach(rule, m) {
      if (m->type == META_TYPE_INTEGER)
        meta.set(m->identifier, m->integer);
      else if (m->type == META_TYPE_BOOLEAN)
        meta.set(m->identifier, m->integer != 0);
      else
        meta.set(m->identifier, m->string);
    }
    if (!meta.empty()) hit.meta = Value(std::move(meta));
    List tags;
    const char* tag;
    yr_rule_tags_foreach(rule, tag) { tags.push_back(tag); }
    if (!tags.empty()) hit.tags = Value(std::move(tags));
    bool any = false;
    const YR_STRING* string;
    const YR_MATCH* match;
    yr_rule_strings_foreach(rule, string) {
      yr_string_matches_foreach(context, string, match) {
        any = true;
        Hit h = hit;
        h.is_string = true;
        h.name = string->identifier;
        h.offset = static_cast<uint64_t>(match->base + match->offset);
        h.length = std::min<uint64_t>(static_cast<uint64_t>(match->match_length), kMatchData);
        hits_.push_back(std::move(h));
        if (--left_ == 0) return CALLBACK_ABORT;
      }
    }
    if (!any) {
      hits_.push_back(std::move(hit));
      if (--left_ == 0) return CALLBACK_ABORT;
    }
    return CALLBACK_CONTINUE;
  }

  Rules rules_;
  Source source_;
  int64_t left_;  // rows this source may still give
  std::string plugin_;
  YR_SCANNER* scanner_ = nullptr;
  YR_MEMORY_BLOCK_ITERATOR iterator_{};
  YR_MEMORY_BLOCK block_{};
  Phase phase_ = Phase::scanning;
  bool started_ = false;
  std::chrono::steady_clock::time_point started_at_;
  size_t span_ = 0;
  uint64_t pos_ = 0;
  size_t quota_ = 0;
  Buffer first_block_, other_block_;
  size_t eval_read_ = 0;
  bool eval_capped_ = false, too_many_ = false;
  std::string error_;
  std::vector<Hit> hits_;
};

// Go's hex.Dump, split at its newlines (the last line "").
List hex_dump(const std::string& data) {
  static const char kDigits[] = "0123456789abcdef";
  List lines;
  for (size_t at = 0; at < data.size(); at += 16) {
    char offset[24];
    std::snprintf(offset, sizeof offset, "%08zx  ", at);
    std::string line = offset, ascii;
    for (size_t j = 0; j < 16; ++j) {
      if (at + j < data.size()) {
        auto c = static_cast<unsigned char>(data[at + j]);
        line += kDigits[c >> 4];
        line += kDigits[c & 15];
        line += ' ';
        ascii += c < 32 || c > 126 ? '.' : static_cast<char>(c);
      } else {
        line += "   ";
      }
      if (j == 7) line += ' ';
    }
    lines.push_back(line + " |" + ascii + "|");
  }
  lines.push_back("");
  return lines;
}

// ---- the plugins

struct Options {
  Rules rules;
  int64_t number = 1;
  uint64_t context = 0;
  uint64_t start = 0, end = 0;  // end 0: the end of the file
  Accessor accessor = Accessor::file;
};

// Sources one after another: each opened, scanned in steps, its rows given
// (its Data read, with the context, as they go out).
class YaraStream : public RowStream {
 public:
  YaraStream(std::string plugin, Options options, std::vector<std::string> targets, std::shared_ptr<const Paths> paths)
      : plugin_(std::move(plugin)), options_(std::move(options)), targets_(std::move(targets)),
        paths_(std::move(paths)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    size_t added = 0, bytes = 0;
    for (int opens = 0; added < budget && bytes < kBytesPerCall;) {
      if (scan_ && !scan_->finished()) {
        bytes += scan_->step(kBytesPerCall - bytes);
        if (!scan_->finished()) return Step::more();
      } else if (scan_ && next_hit_ < scan_->hits().size()) {
        bytes += emit(scan_->hits()[next_hit_++], out);
        ++added;
      } else if (next_target_ < targets_.size()) {
        if (opens++ == kOpensPerCall) return Step::more();
        scan_.reset();
        next_hit_ = 0;
        if (auto source = open(std::move(targets_[next_target_++])))
          scan_ = std::make_unique<Scan>(options_.rules, std::move(*source), options_.number, options_.number == 1,
                                         plugin_);
      } else {
        scan_.reset();
        return Step::done();
      }
    }
    return Step::more();
  }

 private:
  // The source `target` names; nullopt, logged, when it cannot be read.
  std::optional<Source> open(std::string target) {
    Source s;
    if (options_.accessor == Accessor::data) {
      s.is_data = true;
      s.name = "data";
      std::string name = target.substr(0, kMaxDataName);
      s.file_name = name;
      Dict file;
      file.set("FullPath", name);
      file.set("Size", static_cast<int64_t>(target.size()));
      s.file = Value(std::move(file));
      s.size = target.size();
      add_span(s, target.size());
      s.data = std::move(target);
      return s;
    }
    if (options_.accessor == Accessor::process) {
      auto pid = process_of(target);
      if (!pid) return skip(target, "not a process: \"/PID\"");
      return open_process(*pid);
    }
    s.name = target;
    s.fd = open_read(target);
    if (s.fd == nullptr) return skip(target, "cannot open: " + errno_message(errno));
    struct stat st;
    if (::fstat(s.fd.get(), &st) != 0) return skip(target, "cannot stat: " + errno_message(errno));
    if (S_ISDIR(st.st_mode)) return skip(target, "a directory");
    if (auto why = not_a_finite_file(s.fd.get()); !why.empty()) return skip(target, why);
    s.file_name = os_path(target);
    struct stat lst;
    std::string_view base = target;
    base = base.substr(base.find_last_of('/') == std::string_view::npos ? 0 : base.find_last_of('/') + 1);
    if (::lstat(target.c_str(), &lst) == 0) s.file = Value(file_info_row(target, base, lst, fs_types_));
    s.size = static_cast<uint64_t>(st.st_size);
    add_span(s, *s.size);
    return s;
  }

  std::optional<Source> open_process(int64_t pid) {
    Source s;
    s.name = "/" + std::to_string(pid);
    s.process = true;
    s.file_name = os_path(s.name);
    Dict file;
    file.set("FullPath", s.name);
    file.set("Size", 0);
    s.file = Value(std::move(file));
    auto ranges = readable_ranges(*paths_, pid);
    if (!ranges) return skip(s.name, "cannot read the memory map of process " + std::to_string(pid));
    s.fd = open_read((paths_->proc / std::to_string(pid) / "mem").string());
    if (s.fd == nullptr) return skip(s.name, "cannot open its memory: " + errno_message(errno));
    size_t huge = 0;
    for (auto& r : *ranges) {
      if (r.length > kMaxRangeBytes) {
        ++huge;
        continue;
      }
      // Adjacent mappings as one span, so that the blocks overlap across them.
      if (!s.spans.empty() && s.spans.back().start + s.spans.back().length == r.start)
        s.spans.back().length += r.length;
      else
        s.spans.push_back(r);
    }
    if (huge) spdlog::warn("vql: {}(): {}: {} mappings larger than 1 TiB not scanned", plugin_, s.name, huge);
    return s;
  }

  void add_span(Source& s, uint64_t size) const {
    uint64_t end = options_.end ? std::min(options_.end, size) : size;
    if (options_.start < end) s.spans.push_back({options_.start, end - options_.start});
  }

  std::nullopt_t skip(const std::string& target, const std::string& why) const {
    spdlog::warn("vql: {}(): {}: {}", plugin_, target, why);
    return std::nullopt;
  }

  // The hit's row; returns the bytes read for its Data.
  size_t emit(const Hit& hit, std::vector<Row>& out) {
    Row row;
    row.set("Rule", hit.rule);
    row.set("Meta", hit.meta);
    row.set("Tags", hit.tags);
    Dict string;
    string.set("Name", hit.name);
    string.set("Offset", Value(hit.offset));
    size_t read = 0;
    if (hit.is_string) {
      uint64_t from = hit.offset - std::min(hit.offset, options_.context);
      std::string data;
      scan_->source().read_into(from, static_cast<size_t>(hit.offset - from + hit.length + options_.context), data);
      read = std::max(data.size(), size_t{1});
      string.set("HexData", hex_dump(data));
      string.set("Data", std::move(data));
    } else {
      string.set("HexData", Value());
      string.set("Data", Value());
    }
    row.set("String", Value(std::move(string)));
    row.set("File", scan_->source().file);
    row.set("FileName", scan_->source().file_name);
    out.push_back(std::move(row));
    return read;
  }

  std::string plugin_;
  Options options_;
  std::vector<std::string> targets_;
  std::shared_ptr<const Paths> paths_;
  size_t next_target_ = 0, next_hit_ = 0;
  std::unique_ptr<Scan> scan_;
  FsTypes fs_types_;
};

// The options both plugins share, checked; rules compiled only when `compile`.
Options options_of(const Args& args, bool compile) {
  Options o;
  // Velociraptor stops after one hit for 0 or less.
  o.number = std::clamp<int64_t>(args.integer("number").value_or(1), 1, kMaxNumber);
  o.context = static_cast<uint64_t>(std::clamp<int64_t>(args.integer("context").value_or(0), 0, kMaxContext));
  for (const char* name : {"start", "end"})
    if (args.integer(name).value_or(0) < 0) args.fail(name, "must not be negative");
  o.start = static_cast<uint64_t>(args.integer("start").value_or(0));
  o.end = static_cast<uint64_t>(args.integer("end").value_or(0));
  args.integer("blocksize");  // the types of the arguments we ignore, checked
  args.boolean("force_buffers");
  args.string("key");
  if (compile) o.rules = rules_of(args, args.string("rules").value_or(""));
  return o;
}

void check_yara(const Args& args) {
  options_of(args, false);
  accessor_of(args, {Accessor::data, Accessor::process});
}

void check_proc_yara(const Args& args) {
  options_of(args, false);
  if (auto pid = args.integer("pid"); pid && *pid <= 0)
    args.fail("pid", "must be positive, got " + std::to_string(*pid));
}

std::unique_ptr<RowStream> make_yara(const Args& args, Env& env) {
  args.require("files");
  auto files = args.strings("files");
  check_yara(args);
  if (args.string("rules").value_or("").find_first_not_of(" \t\r\n") == std::string::npos)
    return rows_stream({});  // no rules: nothing matches
  Options o = options_of(args, true);
  o.accessor = accessor_of(args, {Accessor::data, Accessor::process});
  return std::make_unique<YaraStream>("yara", std::move(o), std::move(files), env.paths);
}

std::unique_ptr<RowStream> make_proc_yara(const Args& args, Env& env) {
  args.require("rules");
  auto pid = args.integer("pid");
  if (!pid) args.fail("pid", "required");
  check_proc_yara(args);
  Options o = options_of(args, true);
  o.accessor = Accessor::process;
  return std::make_unique<YaraStream>("proc_yara", std::move(o), std::vector<std::string>{"/" + std::to_string(*pid)},
                                      env.paths);
}

constexpr char kRowShape[] =
    "Rule, Meta (dict, or NULL), Tags (list, or NULL), String {Name, Offset, HexData (Go's hex.Dump lines), Data "
    "(the match and `context` bytes either side)}, File, FileName. A row per string match (a rule matching no "
    "string: one row, String empty), at most `number` per file.";

}  // namespace

void add_yara_plugins(Registry& r) {
  std::vector<ArgSpec> common = {
      {"context", "int", false, "bytes either side of a match in Data (at most 64 KiB)"},
      {"number", "int", false, "rows per file at most (default 1, at most 10000)"},
      {"key", "string", false, "accepted; rules are cached by their text"},
      {"namespace", "string", false, "the rules' YARA namespace"},
      {"vars", "dict", false, "external variables: ints, bools, floats, strings"}};
  auto yara_args = common;
  yara_args.insert(yara_args.begin(),
                   {{"files", "string or list of strings", true, "the files (with accessor='data': the data)"},
                    {"rules", "string", false, "YARA source (at most 8 MiB), or \"wide nocase ascii: s1, s2\""},
                    {"accessor", "string", false, "file or auto (the default), data, or process (files '/PID')"},
                    {"start", "int", false, "the offset to scan from"},
                    {"end", "int", false, "the offset to scan to (default: the end)"},
                    {"blocksize", "int", false, "accepted; blocks are 1 MiB"},
                    {"force_buffers", "bool", false, "accepted; files are always read in blocks"}});
  r.add(PluginSpec{"yara", std::string("Scans files with YARA rules, in 1 MiB blocks over several calls: ") + kRowShape,
                   yara_args, false, make_yara},
        check_yara);
  auto proc_args = common;
  proc_args.insert(proc_args.begin(), {{"rules", "string", true, "YARA source (at most 8 MiB), or the shorthand"},
                                       {"pid", "int", true, "the process"}});
  r.add(PluginSpec{"proc_yara",
                   std::string("Scans a process's readable memory with YARA rules (Offset an address, FileName "
                               "\"/PID\"): ") + kRowShape,
                   proc_args, false, make_proc_yara},
        check_proc_yara);
}

}  // namespace outpost::vql
