// The keys a receiver trusts and the topics each may publish on. Deny by default: a key that is
// not here is rejected as unknown_key, and a trusted key may publish only under its prefixes.
//
// A trust file is a .pub file: its first line is the hex public key; further lines may be
//   allow PREFIX     the key may publish on PREFIX and below (segment-wise); "allow *" = any
//   # comment
// A file without allow lines gets the loader's default prefixes.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

struct TrustedKey {
  crypto::PublicKey key;
  std::string name;                   // for logs: the file stem, or what add() was given
  std::vector<std::string> prefixes;  // topic prefixes it may publish on; "" = every topic

  bool mayPublish(std::string_view topic) const;
};

class TrustStore {
 public:
  // Adds or replaces the entry for `key`. Every prefix must be "" or a valid topic.
  Status add(const crypto::PublicKey& key, std::string name, std::vector<std::string> prefixes);
  // Loads one trust file, or every *.pub file of a directory.
  Status load(const std::string& path, const std::vector<std::string>& defaultPrefixes);
  // Revocation: the key is no longer trusted. Returns whether it was.
  bool remove(const crypto::PublicKey& key);

  const TrustedKey* find(const crypto::PublicKey& key) const;
  // The entry whose ed25519 key has this Curve25519 form: how the ZAP handler recognises a
  // CurveZMQ client (the conversion is one-way, so the store keeps the forms as keys are added).
  const TrustedKey* findByCurve(const crypto::CurvePublicKey& curve) const;
  size_t size() const { return keys_.size(); }

 private:
  Status loadFile(const std::string& path, const std::vector<std::string>& defaultPrefixes);

  std::unordered_map<crypto::PublicKey, TrustedKey, crypto::PublicKeyHash> keys_;
  // Curve form -> ed25519 key, for every key of keys_ that has one.
  std::map<crypto::CurvePublicKey, crypto::PublicKey> byCurve_;
};

}  // namespace enjin::bus
