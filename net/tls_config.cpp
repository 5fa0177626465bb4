#include "net/tls_config.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace outpost::net {
namespace {

std::string read_pem(const std::string& path, const char* what) {
  if (path.empty()) throw std::runtime_error(std::string("TLS: no ") + what + " file configured");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty())
    throw std::runtime_error(std::string("TLS: cannot read the ") + what + " file " + path);
  return text.str();
}

// kj reports bad PEM as a kj::Exception; say which file it was.
template <class F>
auto parsing(const std::string& path, const char* what, F f) {
  try {
    return f();
  } catch (const kj::Exception& e) {
    throw std::runtime_error(std::string("TLS: ") + what + " file " + path + " is not usable: " +
                             e.getDescription().cStr());
  }
}

}  // namespace

TlsSetup::TlsSetup(const TlsFiles& files, bool server) {
  auto ca = read_pem(files.ca, "CA certificate");
  auto cert = read_pem(files.cert, "certificate");
  auto key = read_pem(files.key, "private key");
  ca_ = parsing(files.ca, "CA certificate",
                [&] { return kj::heap<kj::TlsCertificate>(kj::StringPtr(ca.c_str())); });
  keypair_ = parsing(files.cert, "certificate or key", [&] {
    return kj::heap<kj::TlsKeypair>(kj::TlsKeypair{kj::TlsPrivateKey(kj::StringPtr(key.c_str())),
                                                   kj::TlsCertificate(kj::StringPtr(cert.c_str()))});
  });
  kj::TlsContext::Options options;
  options.useSystemTrustStore = false;  // pinned: only our CA
  options.trustedCertificates = kj::arrayPtr(ca_.get(), 1);
  options.verifyClients = server;
  options.minVersion = kj::TlsVersion::TLS_1_2;  // 1.3 is negotiated when both ends allow it
  options.defaultKeypair = *keypair_;
  context_ = kj::heap<kj::TlsContext>(kj::mv(options));
}

}  // namespace outpost::net
