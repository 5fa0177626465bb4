#pragma once
// TLS material for both ends, read from PEM files. Each end trusts exactly
// one CA (pinned): the system trust store is never consulted.

#include <kj/compat/tls.h>

#include <memory>
#include <string>

namespace outpost::net {

struct TlsFiles {
  std::string ca;    // the CA that signed the other end's certificate
  std::string cert;  // this end's certificate
  std::string key;   // this end's private key
  bool insecure = false;  // plaintext: only on explicit request, warned at every start
};

// A kj::TlsContext and the certificates it points into. `server` requires
// and verifies client certificates. Throws std::runtime_error naming the file
// that is missing or unreadable.
class TlsSetup {
 public:
  TlsSetup(const TlsFiles& files, bool server);
  kj::TlsContext& context() { return *context_; }

 private:
  kj::Own<kj::TlsCertificate> ca_;
  kj::Own<kj::TlsKeypair> keypair_;
  kj::Own<kj::TlsContext> context_;
};

}  // namespace outpost::net
