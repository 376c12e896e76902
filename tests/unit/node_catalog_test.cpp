// The nodes a parent runs: the file's (or the parent's spec's) and the API's, kept apart, the
// API's in a real store; and node bodies as the API takes them, checked as the file is.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "enjin/acl/password.hpp"
#include "enjin/ring/node_catalog.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/store/store.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::ring {
namespace {

using nlohmann::json;

NodeSpec node(const std::string& label) {
  NodeSpec n;
  n.label = label;
  return n;
}

NodeCatalog::Made made(const std::string& label, const std::string& strategy = "exec") {
  json body{{"label", label}, {"strategy", strategy}};
  auto spec = nodeSpecFromTableJson(body, 1);
  EXPECT_TRUE(spec.ok()) << spec.error().message;
  return {*spec, body.dump()};
}

std::vector<std::string> labels(const std::vector<NodeSpec>& nodes) {
  std::vector<std::string> out;
  for (const auto& n : nodes) out.push_back(n.label);
  return out;
}

class NodeCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::open(dir_.path() + "/r.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
  }
  testing::TempDir dir_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(NodeCatalogTest, MadeNodesAreStoredAndComeBack) {
  NodeCatalog c(*store_, 1, "r0.toml");
  ASSERT_TRUE(c.setDeclared({node("file")}).ok());
  ASSERT_TRUE(c.create(made("a")).ok());
  ASSERT_TRUE(c.create(made("b")).ok());
  EXPECT_EQ(labels(c.desired()), (std::vector<std::string>{"file", "a", "b"}));
  auto changed = c.update(made("a", "unix-user"));
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->spec.strategy, "exec") << "update returns the node as it was";
  ASSERT_TRUE(c.remove("b").ok());

  NodeCatalog again(*store_, 1, "r0.toml");
  ASSERT_TRUE(again.load().ok());
  ASSERT_EQ(again.made().size(), 1u);
  EXPECT_EQ(again.made()[0].spec.label, "a");
  EXPECT_EQ(again.made()[0].spec.strategy, "unix-user");
  EXPECT_EQ(json::parse(again.made()[0].body)["strategy"], "unix-user");
}

TEST_F(NodeCatalogTest, TheFilesNodesAreNotTheApis) {
  NodeCatalog c(*store_, 1, "r0.toml");
  ASSERT_TRUE(c.setDeclared({node("file")}).ok());
  auto create = c.create(made("file"));
  ASSERT_FALSE(create.ok());
  EXPECT_EQ(create.error().code, 409);
  EXPECT_EQ(create.error().message, "node 'file' is declared in r0.toml");
  auto update = c.update(made("file"));
  ASSERT_FALSE(update.ok());
  EXPECT_EQ(update.error().code, 409);
  EXPECT_EQ(c.remove("file").error().code, 409);
  EXPECT_EQ(c.remove("none").error().code, 404);
  EXPECT_EQ(c.update(made("none")).error().code, 404);
  ASSERT_TRUE(c.create(made("a")).ok());
  EXPECT_EQ(c.create(made("a")).error().code, 409);
  // A reload that would declare what the API made is refused, and the declared set stays.
  auto reload = c.setDeclared({node("file"), node("a")});
  ASSERT_FALSE(reload.ok());
  EXPECT_EQ(reload.error().code, 409);
  EXPECT_NE(reload.error().message.find("made through the API"), std::string::npos);
  EXPECT_EQ(labels(c.desired()), (std::vector<std::string>{"file", "a"}));
}

TEST_F(NodeCatalogTest, AStoredSetThatDoesNotParseIsAnError) {
  ASSERT_TRUE(store_->setMeta("api_nodes", "{not json").ok());
  NodeCatalog c(*store_, 1, "r0.toml");
  auto st = c.load();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("the nodes made through the API"), std::string::npos);
}

TEST(NodeTableJson, TakesTheFilesKeysAndTheApisPlurals) {
  auto hash = acl::hashPassword("a-long-enough-password");
  ASSERT_TRUE(hash.ok());
  json body{{"label", "infra"},
            {"api_listen", "127.0.0.1:8481"},
            {"admins", {{{"user", "ops"}, {"password_hash", *hash}}}},
            {"nodes",
             {{{"label", "shop"},
               {"processes", {{{"name", "web"}, {"command", {"/bin/sleep", "9"}}, {"restart", "always"}}}}}}}};
  auto spec = nodeSpecFromTableJson(body, 1);
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  EXPECT_EQ(spec->apiListen, "127.0.0.1:8481");
  ASSERT_EQ(spec->admins.size(), 1u);
  EXPECT_EQ(spec->admins[0].user, "ops");
  ASSERT_EQ(spec->nodes.size(), 1u);
  ASSERT_EQ(spec->nodes[0].processes.size(), 1u);
  EXPECT_EQ(spec->nodes[0].processes[0].command[1], "9");
  // The wire form carries them, and reads back the same.
  auto back = nodeSpecFromJson(nodeSpecToJson(*spec), 1);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, *spec);
}

TEST(NodeTableJson, RefusesWhatTheFileRefuses) {
  auto refuse = [](const json& body, int ring, const std::string& part) {
    auto spec = nodeSpecFromTableJson(body, ring);
    ASSERT_FALSE(spec.ok()) << body.dump();
    EXPECT_EQ(spec.error().code, 400);
    EXPECT_NE(spec.error().message.find(part), std::string::npos) << spec.error().message;
  };
  refuse(json::array(), 1, "expected a JSON object");
  refuse({{"label", "a b"}}, 1, "label");
  refuse({{"label", "a"}, {"colour", 1}}, 1, "unknown key 'colour'");
  refuse({{"label", "a"}, {"strategy", 3}}, 1, "strategy");
  refuse({{"label", "a"}, {"strategy", nullptr}}, 1, "null");
  refuse({{"label", "a"}, {"api_listen", "example.com:80"}}, 1, "api_listen");
  refuse({{"label", "a"}, {"admins", {{{"user", "ops"}, {"password_hash", "plain"}}}}}, 1, "argon2id");
  refuse({{"label", "a"}, {"nodes", json::array()}, {"ring2", json::array()}}, 1, "same key");
  refuse({{"label", "a"}, {"processes", {{{"name", "w"}, {"command", "x"}}}}}, 2, "command");
  refuse({{"label", "a"}, {"api_listen", "127.0.0.1:1"}}, 2, "api_listen");
}

}  // namespace
}  // namespace enjin::ring
