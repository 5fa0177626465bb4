// outpostctl top: a live full-terminal view of an agent's actors (rates
// between refreshes), its buffer's lanes, its link and its warnings; plain
// frames, one after another, when stdout is not a terminal.

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "schemas/json_reader.hpp"
#include "tools/inspector_views.hpp"

namespace outpost::ctl {
namespace {

using Json = schemas::Json;

struct Previous {
  uint64_t handled = 0, rows_out = 0;
};

// The terminal in raw mode (keys without Enter, no echo) for as long as this lives.
class RawTerminal {
 public:
  RawTerminal() {
    if (!isatty(0) || tcgetattr(0, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = tcsetattr(0, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) tcsetattr(0, TCSANOW, &saved_);
  }
  bool active() const { return active_; }

 private:
  termios saved_{};
  bool active_ = false;
};

volatile sig_atomic_t interrupted = 0;

std::string bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  return fmt::format(u ? "{:.1f} {}" : "{:.0f} {}", b, units[u]);
}

std::string bar(double fraction, int width) {
  int full = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * width + 0.5);
  if (fraction > 0 && full == 0) full = 1;
  return "[" + std::string(full, '#') + std::string(width - full, '.') + "]";
}

// The upper bound, in microseconds, of the bucket holding the 99th percentile.
std::string p99(capnp::List<uint64_t>::Reader h) {
  uint64_t total = 0;
  for (auto c : h) total += c;
  if (total == 0) return "-";
  uint64_t seen = 0;
  for (unsigned i = 0; i < h.size(); ++i)
    if ((seen += h[i]) * 100 >= total * 99) return fmt::format("{:.0f}", static_cast<double>(2ull << i) / 1000);
  return "-";
}

struct View {
  std::string sort = "mailbox";
  std::string filter;
  bool typing = false;  // the filter is being typed
};

std::vector<std::string> frame(Session& s, const View& view, std::map<uint64_t, Previous>& prev, double dt,
                               unsigned interval_ms) {
  auto req = s.inspector.actorsRequest();
  req.setWithStatus(true);
  auto r = s.wait(req.send(), "the agent's actors", 5 * kj::SECONDS);
  auto warnings = s.wait(s.inspector.warningsRequest().send(), "the agent's warnings");
  std::vector<std::string> out;
  out.push_back(fmt::format("outpost top - agent {} (pid {}) - {} actors - sort: {} - filter: {}{} - every {:.1f} s",
                            s.agent, s.pid, r.getActors().size(), view.sort,
                            view.filter.empty() && !view.typing ? "none" : view.filter, view.typing ? "_" : "",
                            interval_ms / 1000.0));
  out.push_back("keys: q quit, m mailbox, r rate, t time, i id, / filter (Enter ends, Esc clears)");
  for (auto a : r.getActors()) {
    std::string kind = a.getKind();
    if (a.getStatus().size() == 0) continue;
    Json status;
    try {
      status = Json::parse(a.getStatus().cStr());
    } catch (const std::exception&) {
      continue;
    }
    if (kind == "buffer") {
      double limit = status.number_or("limit_bytes", 0), live = status.number_or("live_bytes", 0);
      out.push_back(fmt::format("buffer  {} of {} ({:.1f}%){}{}", bytes(live), bytes(limit),
                                limit ? 100 * live / limit : 0.0, status.has("stalled") && status["stalled"].b ? " STALLED" : "",
                                status.has("full") && status["full"].b ? " FULL" : ""));
      if (status.has("lanes"))
        for (auto lane : {"control", "events", "results", "uploads"})
          if (status["lanes"].has(lane)) {
            auto& l = status["lanes"][lane];
            double b = l.number_or("bytes", 0);
            out.push_back(fmt::format("  {:<8} {} {:>10} records {:>10}", lane, bar(limit ? b / limit : 0, 30),
                                      l.number_or("records", 0), bytes(b)));
          }
    } else if (kind == "net-link" || kind == "link") {
      std::string line = fmt::format("link    {} {}", a.getState().cStr(),
                                     status.string_or("target", status.string_or("path", "")));
      if (status.has("retry_in_ms")) line += fmt::format(", retry in {:.0f} ms", status.number_or("retry_in_ms", 0));
      if (a.getLastError().size()) line += fmt::format(", last error: {}", a.getLastError().cStr());
      out.push_back(line);
    }
  }
  if (warnings.getWarnings().size() == 0) out.push_back("warnings: none");
  for (auto w : warnings.getWarnings())
    out.push_back(fmt::format("WARNING {} {} #{}: {}", w.getKind().cStr(), w.getActorName().cStr(), w.getActor(),
                              w.getEvidence().cStr()));
  out.push_back("");
  out.push_back(fmt::format("{:>6} {:>6} {:<34} {:<17} {:>7} {:>9} {:>8} {:>8} {:>9}", "ID", "PARENT", "ACTOR", "STATE",
                            "MAILBOX", "MSG/S", "AVG_US", "P99_US", "ROWS/S"));
  struct Row {
    in::ActorInfo::Reader a;
    double rate, rows;
  };
  std::vector<Row> rows;
  std::map<uint64_t, Previous> next;
  for (auto a : r.getActors()) {
    // A rate needs the actor in the last frame too (counters only grow).
    auto p = prev.find(a.getId());
    bool known = p != prev.end() && dt > 0;
    rows.push_back({a, known ? (a.getHandled() - p->second.handled) / dt : 0,
                    known ? (a.getRowsOut() - p->second.rows_out) / dt : 0});
    next[a.getId()] = {a.getHandled(), a.getRowsOut()};
    if (!view.filter.empty() && label(a).find(view.filter) == std::string::npos) rows.pop_back();
  }
  prev = std::move(next);
  std::stable_sort(rows.begin(), rows.end(), [&](const Row& x, const Row& y) {
    if (view.sort == "mailbox") return x.a.getMailbox() > y.a.getMailbox();
    if (view.sort == "rate") return x.rate > y.rate;
    if (view.sort == "time") return x.a.getHandlingNs() > y.a.getHandlingNs();
    return x.a.getId() < y.a.getId();
  });
  for (auto& row : rows) {
    auto a = row.a;
    double avg = a.getHandled() ? static_cast<double>(a.getHandlingNs()) / a.getHandled() / 1000 : 0;
    out.push_back(fmt::format("{:>6} {:>6} {:<34} {:<17} {:>7} {:>9.0f} {:>8.1f} {:>8} {:>9.0f}", a.getId(),
                              a.getParent(), label(a).substr(0, 34), a.getState().cStr(), a.getMailbox(), row.rate, avg,
                              p99(a.getHandlingHistogram()), row.rows));
  }
  return out;
}

// Applies one key; false to quit.
bool key(View& view, char c) {
  if (view.typing) {
    if (c == '\n' || c == '\r') view.typing = false;
    else if (c == 27) view.typing = false, view.filter.clear();
    else if (c == 127 || c == 8) { if (!view.filter.empty()) view.filter.pop_back(); }
    else if (c >= 32 && c < 127) view.filter += c;
    return true;
  }
  switch (c) {
    case 'q': case 'Q': return false;
    case 'm': view.sort = "mailbox"; break;
    case 'r': view.sort = "rate"; break;
    case 't': view.sort = "time"; break;
    case 'i': view.sort = "id"; break;
    case '/': view.typing = true; view.filter.clear(); break;
    case 27: view.filter.clear(); break;
  }
  return true;
}

}  // namespace

int run_top(Session& s, unsigned interval_ms, int iterations, const std::string& sort) {
  bool tty = isatty(1);
  RawTerminal raw;
  View view;
  view.sort = sort;
  signal(SIGINT, [](int) { interrupted = 1; });
  signal(SIGTERM, [](int) { interrupted = 1; });
  if (tty) std::cout << "\x1b[?1049h\x1b[?25l";  // the alternate screen, no cursor
  std::map<uint64_t, Previous> prev;
  auto last = std::chrono::steady_clock::now();
  bool go = true;
  for (int n = 0; go && !interrupted && (iterations <= 0 || n < iterations); ++n) {
    // Histograms stay on while top runs, and go off when it leaves.
    auto watch = s.inspector.watchRequest();
    watch.setSeconds(std::max(5u, 3 * interval_ms / 1000));
    s.wait(watch.send(), "the agent");
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - last).count();
    last = now;
    auto lines = frame(s, view, prev, n == 0 ? 0 : dt, interval_ms);
    if (tty) {
      winsize ws{};
      ioctl(1, TIOCGWINSZ, &ws);
      size_t rows = ws.ws_row ? ws.ws_row : 24, cols = ws.ws_col ? ws.ws_col : 80;
      std::string screen = "\x1b[H\x1b[2J";
      for (size_t i = 0; i < lines.size() && i < rows; ++i)
        screen += lines[i].substr(0, cols) + (i + 1 < rows && i + 1 < lines.size() ? "\r\n" : "");
      std::cout << screen << std::flush;
    } else {
      for (auto& l : lines) std::cout << l << "\n";
      std::cout << std::endl;
    }
    // Until the next refresh: keys, when stdin is a terminal.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
    while (go && !interrupted && (iterations <= 0 || n + 1 < iterations)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{0, POLLIN, 0};
      if (!raw.active()) {
        std::this_thread::sleep_for(left);
        break;
      }
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char c;
      bool redraw = false;
      while (::read(0, &c, 1) == 1) go = key(view, c), redraw = true;
      if (redraw) break;  // show the new sort or filter at once
    }
  }
  if (tty) std::cout << "\x1b[?25h\x1b[?1049l" << std::flush;
  return 0;
}

}  // namespace outpost::ctl
