#include "net/collector/nats_link.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "net/collector/upload.hpp"
#include "persistence/errors.hpp"

namespace outpost::net {

jsSubOptions ordered_since(const std::string& stream, int64_t since_ns) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  int64_t margin = int64_t{10} * 1000 * 1000 * 1000;
  so.Config.DeliverPolicy = since_ns > margin ? js_DeliverByStartTime : js_DeliverAll;
  so.Config.OptStartTime = since_ns > margin ? since_ns - margin : 0;
  return so;
}

std::string nats_status_text(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  if (const char* detail = nats_GetLastError(&last); detail && *detail && last == s) text += std::string(": ") + detail;
  return text;
}

std::string subject_token(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')
      out += static_cast<char>(c);
    else
      append_escaped(out, c, '=');
  }
  return out.empty() ? "=" : out;
}

std::string subject_untoken(const std::string& token) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < token.size(); ++i) {
    if (token[i] != '=') {
      out += token[i];
      continue;
    }
    if (i + 2 >= token.size()) return {};
    int hi = hex(token[i + 1]), lo = hex(token[i + 2]);
    if (hi < 0 || lo < 0) return {};
    out += static_cast<char>(hi << 4 | lo);
    i += 2;
  }
  return out;
}

std::vector<std::string> nats_servers(const std::string& list) {
  std::vector<std::string> out;
  for (size_t at = 0; at <= list.size();) {
    size_t comma = std::min(list.find(',', at), list.size());
    if (comma > at) out.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

std::string nats_where(const NatsLink& link) {
  std::string out;
  for (auto& s : link.servers) out += (out.empty() ? "" : ",") + s;
  return "NATS at " + out;
}

NatsConnection nats_connect(const NatsLink& link, natsOptions* opts, std::chrono::milliseconds patience,
                            const std::string& who) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (int attempt = 0;; ++attempt) {
    natsConnection* nc = nullptr;
    natsStatus s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK) return NatsConnection(nc);
    if (std::chrono::steady_clock::now() >= deadline)
      throw persistence::StoreError(who + ": cannot connect to " + nats_where(link) + ": " + nats_status_text(s));
    if (attempt % 20 == 0) spdlog::warn("collector: waiting for {}: {}", nats_where(link), nats_status_text(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

natsStatus open_bucket(kvStore** kv, jsCtx* js, const std::string& name, int replicas) {
  natsStatus s = js_KeyValue(kv, js, name.c_str());
  if (s != NATS_NOT_FOUND) return s;
  kvConfig kc;
  kvConfig_Init(&kc);
  kc.Bucket = name.c_str();
  kc.History = 1;
  kc.Replicas = replicas;
  return js_CreateKeyValue(kv, js, &kc);
}

NatsOptions nats_options(const NatsLink& link, std::chrono::milliseconds timeout) {
  natsOptions* raw = nullptr;
  if (natsOptions_Create(&raw) != NATS_OK) throw persistence::StoreError("cannot create NATS options");
  NatsOptions opts(raw);
  if (link.servers.empty()) throw persistence::StoreError("no NATS server given");
  std::vector<const char*> servers;
  for (auto& s : link.servers) servers.push_back(s.c_str());
  auto check = [&](natsStatus s, const std::string& what) {
    if (s != NATS_OK) throw persistence::StoreError("NATS: " + what + ": " + nats_status_text(s));
  };
  check(natsOptions_SetServers(raw, servers.data(), static_cast<int>(servers.size())), "the server list");
  natsOptions_SetTimeout(raw, timeout.count());
  natsOptions_SetMaxReconnect(raw, -1);  // for ever: a cut-off collector stops acknowledging, then resumes
  natsOptions_SetReconnectWait(raw, 250);
  natsOptions_SetReconnectBufSize(raw, 64 << 20);
  if (!link.ca.empty()) {
    check(natsOptions_SetSecure(raw, true), "TLS (libnats built without it?)");
    check(natsOptions_LoadCATrustedCertificates(raw, link.ca.c_str()), "cannot load the CA " + link.ca);
  }
  if (!link.cert.empty() || !link.key.empty()) {
    if (link.cert.empty() || link.key.empty() || link.ca.empty())
      throw persistence::StoreError("NATS: a client certificate needs --nats-cert, --nats-key and --nats-ca");
    check(natsOptions_LoadCertificatesChain(raw, link.cert.c_str(), link.key.c_str()),
          "cannot load the certificate " + link.cert + " and key " + link.key);
  }
  if (!link.creds.empty())
    check(natsOptions_SetUserCredentialsFromFiles(raw, link.creds.c_str(), nullptr),
          "cannot use the credentials file " + link.creds);
  return opts;
}

}  // namespace outpost::net
