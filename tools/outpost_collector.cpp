// outpost-collector: accepts agents over TLS and stores their rows, exactly
// once, as JSON lines under <datadir>/<agent>/<artifact>/<date>.jsonl
// (--storage jsonl), or into a NATS JetStream stream (--storage jetstream).

#include <kj/async-unix.h>
#include <signal.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <optional>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "net/collector/admin_relay.hpp"
#include "net/collector/jetstream_admin.hpp"
#include "net/collector/jetstream_store.hpp"
#include "tools/collector_admin.hpp"
#include "persistence/errors.hpp"

namespace {

using namespace outpost::net;

const char* signal_name(int signo) { return signo == SIGTERM ? "SIGTERM" : signo == SIGINT ? "SIGINT" : "a signal"; }

// Each agent holds a connection: the soft limit on descriptors (often 1024)
// is raised to the hard one. Returns the limit in force (0 if unknown).
rlim_t raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur == limit.rlim_max) return limit.rlim_cur;
  rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return before;
  spdlog::info("collector: open files limit raised from {} to {}", before, limit.rlim_cur);
  return limit.rlim_cur;
}

// Row files kept open across groups: a quarter of the descriptors (the rest
// are for connections), so that each agent's file is not closed and opened
// again at every group of a large fleet; at least the store's default.
size_t open_files_for(rlim_t limit, size_t fallback) {
  if (limit == RLIM_INFINITY) return std::max<size_t>(fallback, 1 << 20);
  return std::max<size_t>(fallback, static_cast<size_t>(limit / 4));
}

// With jetstream, the fleet's shared admin state and the relay between its collectors.
struct FleetNames {
  std::string admin_bucket = "outpost-admin";
  std::string admin_prefix = "outpost-admin";
};

int serve(const std::string& datadir, CollectorConfig config, CollectorStoreOptions options,
          const std::optional<JetStreamOptions>& jetstream, const FleetNames& fleet) {
  options.max_open_files = open_files_for(raise_descriptor_limit(), options.max_open_files);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  auto io = kj::setupAsyncIo();
  int agents_keep_days = options.agents_keep_days;
  CollectorStore store(datadir, std::move(options));
  auto& repaired = store.repair_report();
  if (repaired.files_cut)
    spdlog::warn("collector: cut {} uncommitted bytes from {} files (agents send them again)",
                 repaired.bytes_cut, repaired.files_cut);
  std::unique_ptr<JetStreamStore> stream;
  if (jetstream) {
    stream = std::make_unique<JetStreamStore>(*jetstream, store);
    spdlog::info("collector: rows go to JetStream stream {} (marks in bucket {})", jetstream->stream,
                 jetstream->marks_bucket);
  }
  std::unique_ptr<JetStreamAdminState> shared;
  std::unique_ptr<AdminRelay> relay;
  if (jetstream) {
    JetStreamAdminOptions admin{jetstream->nats, fleet.admin_bucket, jetstream->replicas};
    admin.request_timeout = jetstream->request_timeout;
    admin.connect_timeout = jetstream->connect_timeout;
    admin.agents_keep_days = agents_keep_days;
    shared = std::make_unique<JetStreamAdminState>(admin);
    AdminRelayOptions relayed{jetstream->nats, fleet.admin_prefix};
    relayed.connect_timeout = jetstream->connect_timeout;
    relay = std::make_unique<AdminRelay>(relayed);
    spdlog::info("collector: admin state in bucket {}, shared with the other collectors; admin calls between them "
                 "on {}.agent.*",
                 fleet.admin_bucket, fleet.admin_prefix);
  }
  StorageWorker worker(stream ? static_cast<RowStore&>(*stream) : store);
  auto server = std::make_unique<CollectorServer>(
      io, std::move(config), shared ? static_cast<AdminState&>(*shared) : store, worker, relay.get());
  uint16_t port = server->start().wait(io.waitScope);
  // Scripts and tests read this line to learn the port (with --listen host:0).
  std::cout << "listening on port " << port << std::endl;
  auto signal = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
  auto info = signal.wait(io.waitScope);
  auto before = worker.stats();
  spdlog::info("collector: {} received, stopping: closing {} connections, storing the uploads already received",
               signal_name(info.si_signo), server->connections());
  server.reset();  // no more uploads come in
  worker.stop();   // what came in is stored (or failed, and its agent sends it again)
  auto after = worker.stats();
  spdlog::info("collector: stopped after {}: at the stop {} uploads ({} records) were stored and {} failed; "
               "in this run {} uploads, {} records stored, {} duplicates, {} malformed, {} failed uploads",
               signal_name(info.si_signo), after.uploads - before.uploads,
               after.records.stored - before.records.stored, after.failures - before.failures, after.uploads,
               after.records.stored, after.records.duplicates, after.records.malformed, after.failures);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"outpost-collector: receives agents' rows over TLS and stores each exactly once"};
  std::string datadir = "outpost-data/collector";
  std::string listen = "127.0.0.1:4750";
  CollectorConfig config;
  app.add_option("--datadir", datadir, "where rows and the collector's state live")
      ->capture_default_str();
  app.add_option("--listen", listen, "host:port to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--ca", config.tls.ca, "CA certificate that signed the agents' certificates");
  app.add_option("--cert", config.tls.cert, "this collector's certificate");
  app.add_option("--key", config.tls.key, "this collector's private key");
  app.add_flag("--insecure", config.tls.insecure,
               "plaintext, no authentication (tests and demos only; warned at every start)");
  std::string admin_socket;
  app.add_option("--admin-socket", admin_socket,
                 "unix socket for the admin commands (default: <datadir>/.collector/admin.sock)");
  app.add_option("--max-handshakes", config.max_handshakes,
                 "TLS handshakes at once; more connections wait, the newest first (a reconnect storm then "
                 "converges instead of every handshake timing out)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CollectorStoreOptions store_options;
  app.add_option("--max-state-size", store_options.max_map_size,
                 "the most the collector's state (LMDB map in <datadir>/.collector) may grow to")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  std::string storage = "jsonl";
  app.add_option("--storage", storage,
                 "where rows go: jsonl (files under --datadir) or jetstream (a NATS JetStream stream; "
                 "the collector's own state stays in --datadir)")
      ->check(CLI::IsMember({"jsonl", "jetstream"}))
      ->capture_default_str();
  JetStreamOptions js;
  std::string nats = "nats://127.0.0.1:4222";
  app.add_option("--nats", nats, "with --storage jetstream: NATS server URLs, comma-separated")
      ->capture_default_str();
  app.add_option("--nats-ca", js.nats.ca, "TLS to NATS: trust only this CA's server certificates");
  app.add_option("--nats-cert", js.nats.cert, "TLS to NATS: this collector's certificate (when NATS verifies clients)");
  app.add_option("--nats-key", js.nats.key, "TLS to NATS: its private key");
  app.add_option("--nats-creds", js.nats.creds, "a NATS credentials file (user JWT and NKey seed)");
  app.add_option("--nats-stream", js.stream, "the JetStream stream (made if missing)")->capture_default_str();
  app.add_option("--nats-subject-prefix", js.subject_prefix, "subjects are <prefix>.<agent>.<lane>.<artifact>")
      ->capture_default_str();
  app.add_option("--nats-marks-bucket", js.marks_bucket, "the key-value bucket of the agents' marks")
      ->capture_default_str();
  FleetNames fleet;
  app.add_option("--nats-admin-bucket", fleet.admin_bucket,
                 "the key-value bucket of flow ids, event tables and queued requests, shared by the collectors")
      ->capture_default_str();
  app.add_option("--nats-admin-prefix", fleet.admin_prefix,
                 "admin calls between collectors go on <prefix>.agent.<agent> (outside the stream's subjects)")
      ->capture_default_str();
  app.add_option("--nats-replicas", js.replicas, "replicas of the stream and buckets when this collector makes them")
      ->check(CLI::Range(1, 5))
      ->capture_default_str();
  int64_t dedup_s = js.duplicate_window.count() / 1000;
  app.add_option("--nats-duplicate-window", dedup_s, "seconds JetStream drops a record published again")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.fallthrough();  // --datadir may follow a command's name
  outpost::admin::CommandArgs args;
  outpost::admin::add_commands(app, args);
  app.require_subcommand(0, 1);
  app.footer("Without a command it serves: receives agents on --listen. The commands talk to a\n"
             "running collector through its admin socket (tail reads the row files).");
  CLI11_PARSE(app, argc, argv);
  if (args.run) {
    try {
      return args.run({datadir, admin_socket});
    } catch (const outpost::persistence::StoreError& e) {  // reading rows from a stream
      std::cerr << "outpost-collector: " << e.what() << "\n";
      return 1;
    }
  }

  size_t colon = listen.rfind(':');
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no port");
    config.host = listen.substr(0, colon);
    unsigned long port = std::stoul(listen.substr(colon + 1));
    if (port > 65535) throw std::invalid_argument("port out of range");
    config.port = static_cast<uint16_t>(port);
  } catch (const std::exception&) {
    std::cerr << "outpost-collector: --listen: expected host:port, got \"" << listen << "\"\n";
    return 2;
  }
  if (!config.tls.insecure && (config.tls.ca.empty() || config.tls.cert.empty() || config.tls.key.empty())) {
    std::cerr << "outpost-collector: TLS needs --ca, --cert and --key (or --insecure to turn it off)\n";
    return 2;
  }
  config.admin_socket = admin_socket.empty() ? outpost::admin::default_socket(datadir) : admin_socket;
  try {
    std::optional<JetStreamOptions> jetstream;
    if (storage == "jetstream") {
      js.nats.servers = nats_servers(nats);
      js.duplicate_window = std::chrono::seconds(dedup_s);
      auto& p = js.subject_prefix;
      if (fleet.admin_prefix == p || fleet.admin_prefix.compare(0, p.size() + 1, p + ".") == 0) {
        std::cerr << "outpost-collector: --nats-admin-prefix " << fleet.admin_prefix
                  << " lies within the stream's subjects (" << p << ".>): admin calls would be stored as rows\n";
        return 2;
      }
      jetstream = js;
    }
    return serve(datadir, std::move(config), std::move(store_options), jetstream, fleet);
  } catch (const outpost::persistence::StoreError& e) {
    std::cerr << "outpost-collector: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "outpost-collector: " << e.what() << "\n";
    return 1;
  } catch (const kj::Exception& e) {
    std::cerr << "outpost-collector: " << e.getDescription().cStr() << "\n";
    return 1;
  }
}
