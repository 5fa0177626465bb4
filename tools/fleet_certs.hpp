#pragma once
// Agent certificates for the fleet benchmark, made in-process: thousands of
// `openssl` runs would take minutes. One P-256 key serves every simulated
// agent (the collector identifies an agent by its certificate's common name),
// and each agent gets a certificate of its own naming it, signed by a CA made
// with tools/outpost-certs.

#include <filesystem>
#include <memory>
#include <string>

namespace outpost::bench {

class FleetCerts {
 public:
  // Reads the CA's certificate and key (PEM); throws std::runtime_error
  // naming the file that cannot be read.
  FleetCerts(const std::filesystem::path& ca_pem, const std::filesystem::path& ca_key);
  ~FleetCerts();
  FleetCerts(const FleetCerts&) = delete;
  FleetCerts& operator=(const FleetCerts&) = delete;

  const std::string& key_pem() const { return key_pem_; }  // the agents' shared private key
  // A client certificate (clientAuth) for `common_name`, valid from an hour
  // ago for 30 days. Not thread-safe: one caller at a time.
  std::string cert_pem(const std::string& common_name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string key_pem_;
};

}  // namespace outpost::bench
