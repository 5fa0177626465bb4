#include "tools/fleet_certs.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <stdexcept>

namespace outpost::bench {
namespace {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

Bio open_file(const std::filesystem::path& path) {
  Bio bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) throw std::runtime_error("fleet certificates: cannot read " + path.string());
  return bio;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext || !X509_add_ext(cert, ext, -1)) throw std::runtime_error("fleet certificates: cannot add an extension");
  X509_EXTENSION_free(ext);
}

}  // namespace

struct FleetCerts::Impl {
  Cert ca;
  Key ca_key;
  Key key;
  long serial = 1000;
};

FleetCerts::FleetCerts(const std::filesystem::path& ca_pem, const std::filesystem::path& ca_key)
    : impl_(std::make_unique<Impl>()) {
  impl_->ca.reset(PEM_read_bio_X509(open_file(ca_pem).get(), nullptr, nullptr, nullptr));
  if (!impl_->ca) throw std::runtime_error("fleet certificates: " + ca_pem.string() + " holds no certificate");
  impl_->ca_key.reset(PEM_read_bio_PrivateKey(open_file(ca_key).get(), nullptr, nullptr, nullptr));
  if (!impl_->ca_key) throw std::runtime_error("fleet certificates: " + ca_key.string() + " holds no private key");
  impl_->key.reset(EVP_EC_gen("P-256"));
  if (!impl_->key) throw std::runtime_error("fleet certificates: cannot make a P-256 key");
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(out.get(), impl_->key.get(), nullptr, nullptr, 0, nullptr, nullptr))
    throw std::runtime_error("fleet certificates: cannot write the key");
  key_pem_ = bio_text(out.get());
}

FleetCerts::~FleetCerts() = default;

std::string FleetCerts::cert_pem(const std::string& common_name) {
  Cert cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), ++impl_->serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600);
  X509_set_pubkey(x, impl_->key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(impl_->ca.get()));
  add_extension(x, impl_->ca.get(), NID_basic_constraints, "CA:FALSE");
  add_extension(x, impl_->ca.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(x, impl_->ca.get(), NID_ext_key_usage, "clientAuth");
  if (!X509_sign(x, impl_->ca_key.get(), EVP_sha256()))
    throw std::runtime_error("fleet certificates: cannot sign the certificate of " + common_name);
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(out.get(), x)) throw std::runtime_error("fleet certificates: cannot write a certificate");
  return bio_text(out.get());
}

}  // namespace outpost::bench
