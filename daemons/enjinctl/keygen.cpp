#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::ctl {

void addKeygenCommand(CLI::App& app, int& exitCode) {
  auto* cmd = app.add_subcommand(
      "keygen", "Generate an ed25519 keypair: OUT.key (seed, 0600) and OUT.pub (public key)");
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  cmd->add_option("--out", *out, "Path without extension, e.g. keys/ring1-a")->required();
  cmd->add_flag("--force", *force, "Replace existing key files");
  cmd->callback([&exitCode, out, force] {
    auto key = crypto::SecretKey::generate();
    if (auto st = crypto::writeKeyPair(*out, key, *force); !st.ok()) {
      std::cerr << "enjinctl keygen: " << st.error().message << "\n";
      exitCode = kExitFailure;
      return;
    }
    std::cout << key.publicKey().hex() << "\n";
  });
}

}  // namespace enjin::ctl
