#include "enjin/bus/trust_store.hpp"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "enjin/base/file.hpp"
#include "enjin/bus/topic.hpp"

namespace enjin::bus {
namespace fs = std::filesystem;

bool TrustedKey::mayPublish(std::string_view topic) const {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return topicMatches(p, topic); });
}

Status TrustStore::add(const crypto::PublicKey& key, std::string name,
                       std::vector<std::string> prefixes) {
  for (const auto& p : prefixes) {
    if (!p.empty() && !isValidTopic(p)) {
      return Error{"trusted key '" + name + "': '" + p + "' is not a valid topic prefix"};
    }
  }
  keys_[key] = TrustedKey{key, std::move(name), std::move(prefixes)};
  // A key that is no curve point can still sign nothing valid; it just never passes ZAP.
  if (auto curve = key.toCurve(); curve.ok()) byCurve_[*curve] = key;
  return {};
}

bool TrustStore::remove(const crypto::PublicKey& key) {
  if (auto curve = key.toCurve(); curve.ok()) byCurve_.erase(*curve);
  return keys_.erase(key) > 0;
}

const TrustedKey* TrustStore::findByCurve(const crypto::CurvePublicKey& curve) const {
  auto it = byCurve_.find(curve);
  return it == byCurve_.end() ? nullptr : find(it->second);
}

const TrustedKey* TrustStore::find(const crypto::PublicKey& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

Status TrustStore::load(const std::string& path,
                        const std::vector<std::string>& defaultPrefixes) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return loadFile(path, defaultPrefixes);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.path().extension() == ".pub") files.push_back(entry.path().string());
  }
  if (ec) return Error{"read trust directory " + path + ": " + ec.message()};
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    if (auto st = loadFile(f, defaultPrefixes); !st.ok()) return st;
  }
  return {};
}

Status TrustStore::loadFile(const std::string& path,
                            const std::vector<std::string>& defaultPrefixes) {
  auto text = readFile(path);
  if (!text.ok()) return text.error().wrap("load trust file");
  std::istringstream in(*text);
  std::string line;
  std::optional<crypto::PublicKey> key;
  std::vector<std::string> prefixes;
  for (int lineNo = 1; std::getline(in, line); ++lineNo) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    const std::string where = path + ":" + std::to_string(lineNo);
    if (!key) {
      auto k = crypto::PublicKey::fromHex(line);
      if (!k.ok()) return Error{where + ": expected the hex public key, " + k.error().message};
      key = *k;
    } else if (line.starts_with("allow ")) {
      std::string prefix = line.substr(6);
      if (prefix == "*") prefix.clear();
      if (!prefix.empty() && !isValidTopic(prefix)) {
        return Error{where + ": '" + prefix + "' is not a valid topic prefix"};
      }
      prefixes.push_back(std::move(prefix));
    } else {
      return Error{where + ": expected 'allow PREFIX' or a comment"};
    }
  }
  if (!key) return Error{path + ": no public key in the file"};
  return add(*key, fs::path(path).stem().string(),
             prefixes.empty() ? defaultPrefixes : std::move(prefixes));
}

}  // namespace enjin::bus
