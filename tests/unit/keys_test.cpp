#include "enjin/crypto/keys.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "enjin/base/hex.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::crypto {
namespace {

using testing::TempDir;

std::vector<uint8_t> unhex(std::string_view h) { return *enjin::fromHex(h); }

// RFC 8032, section 7.1: test vectors for Ed25519, through enjin's own sign and verify.
struct Rfc8032Vector {
  const char* secret;
  const char* publicKey;
  const char* message;
  const char* signature;
};

const Rfc8032Vector kVectors[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b4"
     "6bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d"
     "8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6"
     "594a7c15e9716ed28dc027beceea1ec40a"},
    {"833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feeb"
     "bd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0"
     "303dca179c138ac17ad9bef1177331a704"},
};

TEST(Rfc8032, VectorsSignAndVerify) {
  for (const auto& v : kVectors) {
    auto seed = unhex(v.secret);
    auto key = SecretKey::fromSeed(std::span<const uint8_t, kSeedBytes>(seed.data(), kSeedBytes));
    EXPECT_EQ(key.publicKey().hex(), v.publicKey);
    auto msg = unhex(v.message);
    auto sig = key.sign(msg);
    EXPECT_EQ(enjin::toHex(sig), v.signature);

    auto pub = PublicKey::fromHex(v.publicKey);
    ASSERT_TRUE(pub.ok());
    auto expected = unhex(v.signature);
    std::span<const uint8_t, kSignatureBytes> expectedSig(expected.data(), kSignatureBytes);
    EXPECT_TRUE(verify(*pub, msg, expectedSig));

    // Any flipped bit, in the message or the signature, fails.
    auto badSig = expected;
    badSig[10] ^= 0x01;
    EXPECT_FALSE(verify(*pub, msg, std::span<const uint8_t, kSignatureBytes>(badSig.data(), 64)));
    auto badMsg = msg;
    badMsg.push_back(0);
    EXPECT_FALSE(verify(*pub, badMsg, expectedSig));
  }
}

TEST(KeyFiles, WriteThenLoadRoundTrips) {
  TempDir dir;
  auto key = SecretKey::generate();
  ASSERT_TRUE(writeKeyPair(dir / "node", key, false).ok());

  struct stat st;
  ASSERT_EQ(::stat((dir / "node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto loaded = SecretKey::load(dir / "node.key");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->publicKey(), key.publicKey());
  auto pub = loadPublicKey(dir / "node.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, key.publicKey());

  // The key file is one line: 64 lowercase hex digits and a newline.
  std::ifstream in(dir / "node.key");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.size(), 64u);
  EXPECT_EQ(line.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(KeyFiles, RefusesToOverwriteWithoutForce) {
  TempDir dir;
  auto first = SecretKey::generate();
  ASSERT_TRUE(writeKeyPair(dir / "node", first, false).ok());
  auto second = SecretKey::generate();
  auto st = writeKeyPair(dir / "node", second, false);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("already exists"), std::string::npos);
  EXPECT_EQ(SecretKey::load(dir / "node.key")->publicKey(), first.publicKey());

  ASSERT_TRUE(writeKeyPair(dir / "node", second, true).ok());
  EXPECT_EQ(SecretKey::load(dir / "node.key")->publicKey(), second.publicKey());
}

TEST(KeyFiles, RefusesKeyReadableByOthers) {
  TempDir dir;
  auto key = SecretKey::generate();
  ASSERT_TRUE(writeKeyPair(dir / "node", key, false).ok());
  for (mode_t mode : {0640, 0604, 0644, 0660, 0602}) {
    ASSERT_EQ(::chmod((dir / "node.key").c_str(), mode), 0);
    auto loaded = SecretKey::load(dir / "node.key");
    ASSERT_FALSE(loaded.ok()) << std::oct << mode;
    EXPECT_NE(loaded.error().message.find(dir / "node.key"), std::string::npos);
    char expect[8];
    std::snprintf(expect, sizeof expect, "%04o", mode);
    EXPECT_NE(loaded.error().message.find(expect), std::string::npos) << loaded.error().message;
  }
  ASSERT_EQ(::chmod((dir / "node.key").c_str(), 0400), 0);
  EXPECT_TRUE(SecretKey::load(dir / "node.key").ok());
}

TEST(KeyFiles, RejectsGarbage) {
  TempDir dir;
  for (const char* content : {"", "zz\n", "0011\n", "not a key at all\n"}) {
    std::string path = dir / "bad.key";
    {
      std::ofstream out(path);
      out << content;
    }
    ::chmod(path.c_str(), 0600);
    auto loaded = SecretKey::load(path);
    EXPECT_FALSE(loaded.ok()) << content;
    std::filesystem::remove(path);
  }
  EXPECT_FALSE(SecretKey::load(dir / "missing.key").ok());
}

}  // namespace
}  // namespace enjin::crypto
