#include "enjin/directory/directory.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "enjin/store/store.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::directory {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::FakeClock;
using testing::TempDir;

constexpr char kHash[] = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
constexpr char kHash2[] = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0$b3RoZXJoYXNo";
// FakeClock's default time, 1'700'000'000'000 ms.
constexpr char kStart[] = "2023-11-14T22:13:20.000Z";

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::open(dir_ / "ring0.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    directory_ = std::make_unique<Directory>(*store_, clock_);
  }

  Directory& d() { return *directory_; }

  // Creates or fails the test.
  json make(Kind kind, const std::string& bodyText) {
    auto r = d().create(kind, json::parse(bodyText));
    EXPECT_TRUE(r.ok()) << bodyText << ": " << r.error().message;
    return r.ok() ? *r : json();
  }
  // The error of a create that must fail.
  Error createError(Kind kind, const std::string& bodyText) {
    auto r = d().create(kind, json::parse(bodyText));
    EXPECT_FALSE(r.ok()) << bodyText << " was created";
    return r.ok() ? Error{} : r.error();
  }
  void makeUser(const std::string& name, const std::string& hash = kHash) {
    make(Kind::kUser, json{{"name", name}, {"password_hash", hash}}.dump());
  }
  size_t count(Kind kind) {
    auto l = d().list(kind);
    EXPECT_TRUE(l.ok());
    return l.ok() ? l->size() : 0;
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Directory> directory_;
};

TEST(DirectoryKinds, CollectionNamesMapBothWays) {
  const std::pair<Kind, const char*> all[] = {
      {Kind::kUser, "users"},
      {Kind::kRole, "roles"},
      {Kind::kMembership, "memberships"},
      {Kind::kRuleSet, "access-rule-sets"},
      {Kind::kCompartment, "compartments"},
      {Kind::kNetwork, "networks"},
      {Kind::kNetworkInterface, "network-interfaces"},
  };
  for (const auto& [kind, name] : all) {
    EXPECT_EQ(collectionName(kind), name);
    EXPECT_EQ(kindFromCollection(name), kind);
  }
  EXPECT_FALSE(kindFromCollection("user").has_value());
  EXPECT_FALSE(kindFromCollection("nodes").has_value());
  EXPECT_EQ(singularName(Kind::kRuleSet), "access rule set");
  EXPECT_EQ(singularName(Kind::kNetworkInterface), "network interface");
}

TEST_F(DirectoryTest, UserRoundTripNeverShowsTheHash) {
  auto created = d().create(Kind::kUser, {{"name", "alice"}, {"password_hash", kHash}});
  ASSERT_TRUE(created.ok()) << created.error().message;
  const json want = {{"name", "alice"}, {"created_at", kStart}, {"updated_at", kStart}};
  EXPECT_EQ(*created, want);
  EXPECT_EQ(*d().get(Kind::kUser, "alice"), want);
  EXPECT_EQ(*d().list(Kind::kUser), json::array({want}));
  EXPECT_EQ(*d().passwordHash("alice"), std::optional<std::string>(kHash));
  EXPECT_FALSE(d().passwordHash("bob")->has_value());
  // Nowhere in what the API shows.
  EXPECT_EQ(d().list(Kind::kUser)->dump().find("argon2id"), std::string::npos);

  // An update without a hash keeps the stored one and moves updated_at only.
  clock_.advanceMillis(1500);
  auto updated = d().update(Kind::kUser, "alice", json::object());
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  EXPECT_EQ((*updated)["created_at"], kStart);
  EXPECT_EQ((*updated)["updated_at"], "2023-11-14T22:13:21.500Z");
  EXPECT_EQ(*d().passwordHash("alice"), std::optional<std::string>(kHash));
  ASSERT_TRUE(d().update(Kind::kUser, "alice", {{"name", "alice"}, {"password_hash", kHash2}}).ok());
  EXPECT_EQ(*d().passwordHash("alice"), std::optional<std::string>(kHash2));
  EXPECT_FALSE(d().get(Kind::kUser, "alice")->contains("password_hash"));

  // Names sort bytewise in a list.
  makeUser("Zed");
  makeUser("bob");
  auto l = d().list(Kind::kUser);
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0]["name"], "Zed");
  EXPECT_EQ((*l)[1]["name"], "alice");
  EXPECT_EQ((*l)[2]["name"], "bob");
}

TEST_F(DirectoryTest, UserBodiesOfTheWrongShapeAre400) {
  struct Case {
    const char* body;
    const char* message;
  };
  const Case cases[] = {
      {R"({"name":"alice"})", "user 'alice': password_hash: missing"},
      {R"({"name":"alice","password_hash":"$2y$10$abc"})", "password_hash: not an argon2id hash"},
      {R"({"name":"alice","password_hash":7})", "user 'alice': password_hash: not a string"},
      {R"({"name":"alice","password_hash":"x","admin":true})", "user 'alice': unknown field 'admin'"},
      {R"({"password_hash":"x"})", "user: name: missing"},
      {R"({"name":"a b","password_hash":"x"})", "name: 'a b': expected 1 to 64"},
      {R"({"name":"","password_hash":"x"})", "name: '': expected 1 to 64"},
      {R"({"name":3,"password_hash":"x"})", "user: name: not a string"},
      {R"(["alice"])", "user: the body is not a JSON object"},
  };
  for (const auto& c : cases) {
    const Error e = createError(Kind::kUser, c.body);
    EXPECT_EQ(e.code, 400) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
  }
  const Error tooLong = createError(
      Kind::kUser, json{{"name", "a"}, {"password_hash", "$argon2id$" + std::string(502, 'x')}}.dump());
  EXPECT_EQ(tooLong.code, 400);
  EXPECT_THAT(tooLong.message, HasSubstr("under 512 bytes"));
  makeUser(std::string(64, 'n'));  // the longest name
  EXPECT_EQ(createError(Kind::kUser, json{{"name", std::string(65, 'n')}, {"password_hash", kHash}}.dump())
                .code,
            400);
  EXPECT_EQ(count(Kind::kUser), 1u);

  makeUser("alice");
  const Error dup = createError(Kind::kUser, json{{"name", "alice"}, {"password_hash", kHash2}}.dump());
  EXPECT_EQ(dup.code, 409);
  EXPECT_EQ(dup.message, "user 'alice' already exists");
  EXPECT_EQ(*d().passwordHash("alice"), std::optional<std::string>(kHash));
}

TEST_F(DirectoryTest, MissingObjectsAre404AndARenameIs400) {
  for (Kind kind : {Kind::kUser, Kind::kRole, Kind::kRuleSet, Kind::kCompartment, Kind::kNetwork,
                    Kind::kNetworkInterface, Kind::kMembership}) {
    auto g = d().get(kind, "ghost");
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.error().code, 404);
    EXPECT_EQ(g.error().message, std::string(singularName(kind)) + " 'ghost' does not exist");
    EXPECT_EQ(d().remove(kind, "ghost").error().code, 404);
    if (kind != Kind::kMembership) {
      EXPECT_EQ(d().update(kind, "ghost", json::object()).error().code, 404);
    }
    EXPECT_EQ(*d().list(kind), json::array());
  }
  makeUser("alice");
  auto renamed = d().update(Kind::kUser, "alice", {{"name", "bob"}});
  ASSERT_FALSE(renamed.ok());
  EXPECT_EQ(renamed.error().code, 400);
  EXPECT_THAT(renamed.error().message, HasSubstr("user 'alice': name: 'bob' is not the name"));
  EXPECT_FALSE(d().get(Kind::kUser, "bob").ok());
}

TEST_F(DirectoryTest, RuleSetRoundTripAndShape) {
  const json created = make(Kind::kRuleSet, R"({"name":"ops","rules":[
      {"effect":"allow","action":"nodes:create","resource":"ring1/*"},
      {"effect":"deny","action":"*","resource":"ring0/a.b_c-d"}]})");
  EXPECT_EQ(created["rules"].size(), 2u);
  EXPECT_EQ(created["rules"][1], json({{"effect", "deny"}, {"action", "*"}, {"resource", "ring0/a.b_c-d"}}));
  EXPECT_EQ(created["created_at"], kStart);
  make(Kind::kRuleSet, R"({"name":"none","rules":[]})");

  struct Case {
    const char* body;
    const char* message;
  };
  const Case cases[] = {
      {R"({"name":"x"})", "access rule set 'x': rules: missing"},
      {R"({"name":"x","rules":{}})", "rules: not an array"},
      {R"({"name":"x","rules":[7]})", "rules[0]: not an object"},
      {R"({"name":"x","rules":[{"effect":"maybe","action":"a","resource":"r"}]})",
       "rules[0].effect: 'maybe' is not allow or deny"},
      {R"({"name":"x","rules":[{"effect":"allow","action":"a b","resource":"r"}]})",
       "rules[0].action: 'a b': expected"},
      {R"({"name":"x","rules":[{"effect":"allow","action":"a","resource":""}]})",
       "rules[0].resource: '': expected"},
      {R"({"name":"x","rules":[{"effect":"allow","action":"a"}]})", "rules[0].resource: missing"},
      {R"({"name":"x","rules":[{"effect":"allow","action":"a","resource":"r","why":1}]})",
       "rules[0]: unknown field 'why'"},
      {R"({"name":"x","rules":[{"effect":"allow","action":1,"resource":"r"}]})",
       "rules[0].action: not a string"},
      {R"({"name":"x","rules":[],"extra":1})", "access rule set 'x': unknown field 'extra'"},
  };
  for (const auto& c : cases) {
    const Error e = createError(Kind::kRuleSet, c.body);
    EXPECT_EQ(e.code, 400) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
  }
  json many = {{"name", "many"}, {"rules", json::array()}};
  for (int i = 0; i < 1000; ++i) {
    many["rules"].push_back({{"effect", "allow"}, {"action", "a"}, {"resource", "r"}});
  }
  make(Kind::kRuleSet, many.dump());  // 1000 is allowed
  many["name"] = "toomany";
  many["rules"].push_back({{"effect", "allow"}, {"action", "a"}, {"resource", "r"}});
  const Error e = createError(Kind::kRuleSet, many.dump());
  EXPECT_EQ(e.code, 400);
  EXPECT_THAT(e.message, HasSubstr("1001 rules, at most 1000"));
  EXPECT_EQ(count(Kind::kRuleSet), 3u);
}

TEST_F(DirectoryTest, ReferencesMustExistAndBlockDeletes) {
  make(Kind::kRuleSet, R"({"name":"ops","rules":[]})");
  make(Kind::kRuleSet, R"({"name":"net","rules":[]})");
  makeUser("alice");

  // A role naming a missing rule set.
  Error e = createError(Kind::kRole, R"({"name":"admin","rule_sets":["ops","gone"]})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message, "role 'admin': rule_sets: access rule set 'gone' does not exist");
  e = createError(Kind::kRole, R"({"name":"admin","rule_sets":"ops"})");
  EXPECT_EQ(e.code, 400);
  e = createError(Kind::kRole, R"({"name":"admin","rule_sets":["ops","ops"]})");
  EXPECT_EQ(e.code, 400);
  EXPECT_THAT(e.message, HasSubstr("'ops' is named twice"));
  const json role = make(Kind::kRole, R"({"name":"admin","rule_sets":["ops"]})");
  EXPECT_EQ(role["rule_sets"], json::array({"ops"}));
  auto upd = d().update(Kind::kRole, "admin", {{"rule_sets", {"ops", "missing"}}});
  ASSERT_FALSE(upd.ok());
  EXPECT_EQ(upd.error().code, 409);
  EXPECT_EQ((*d().get(Kind::kRole, "admin"))["rule_sets"], json::array({"ops"}));
  ASSERT_TRUE(d().update(Kind::kRole, "admin", {{"rule_sets", {"ops", "net"}}}).ok());

  // A rule set in use by a role stays.
  auto st = d().remove(Kind::kRuleSet, "net");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message, "access rule set 'net' is used by role 'admin'");

  // Memberships: both ends must exist; the name is USER:ROLE.
  e = createError(Kind::kMembership, R"({"user":"bob","role":"admin"})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message, "membership 'bob:admin': user: user 'bob' does not exist");
  e = createError(Kind::kMembership, R"({"user":"alice","role":"root"})");
  EXPECT_EQ(e.code, 409);
  EXPECT_THAT(e.message, HasSubstr("role 'root' does not exist"));
  e = createError(Kind::kMembership, R"({"user":"alice"})");
  EXPECT_EQ(e.code, 400);
  EXPECT_THAT(e.message, HasSubstr("role: missing"));
  e = createError(Kind::kMembership, R"({"name":"x:y","user":"alice","role":"admin"})");
  EXPECT_EQ(e.code, 400);
  const json m = make(Kind::kMembership, R"({"user":"alice","role":"admin"})");
  EXPECT_EQ(m, json({{"name", "alice:admin"},
                     {"user", "alice"},
                     {"role", "admin"},
                     {"created_at", kStart},
                     {"updated_at", kStart}}));
  EXPECT_EQ(*d().get(Kind::kMembership, "alice:admin"), m);
  e = createError(Kind::kMembership, R"({"user":"alice","role":"admin"})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message, "membership 'alice:admin' already exists");
  auto change = d().update(Kind::kMembership, "alice:admin", {{"user", "alice"}, {"role", "admin"}});
  ASSERT_FALSE(change.ok());
  EXPECT_EQ(change.error().code, 405);
  EXPECT_EQ(change.error().message, "memberships cannot be changed; delete and create");

  // A role in use by a membership stays; without it, it goes, and then the rule set can go.
  st = d().remove(Kind::kRole, "admin");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message, "role 'admin' is used by membership 'alice:admin'");
  ASSERT_TRUE(d().remove(Kind::kMembership, "alice:admin").ok());
  ASSERT_TRUE(d().remove(Kind::kRole, "admin").ok());
  ASSERT_TRUE(d().remove(Kind::kRuleSet, "net").ok());
  EXPECT_EQ(count(Kind::kRuleSet), 1u);
  EXPECT_EQ(count(Kind::kRole), 0u);
}

TEST_F(DirectoryTest, CompartmentsFormADagWithoutCycles) {
  const json a = make(Kind::kCompartment, R"({"name":"a"})");
  EXPECT_TRUE(a["parent_compartment"].is_null());
  const json b = make(Kind::kCompartment, R"({"name":"b","parent_compartment":"a"})");
  EXPECT_EQ(b["parent_compartment"], "a");
  const json c = make(Kind::kCompartment, R"({"name":"c","parent_compartment":["a","b"]})");
  EXPECT_EQ(c["parent_compartment"], json::array({"a", "b"}));
  make(Kind::kCompartment, R"({"name":"d","parent_compartment":null})");

  Error e = createError(Kind::kCompartment, R"({"name":"self","parent_compartment":"self"})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message, "compartment 'self': parent_compartment: makes a cycle: self -> self");
  e = createError(Kind::kCompartment, R"({"name":"x","parent_compartment":["a","nowhere"]})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message,
            "compartment 'x': parent_compartment: compartment 'nowhere' does not exist");
  e = createError(Kind::kCompartment, R"({"name":"x","parent_compartment":5})");
  EXPECT_EQ(e.code, 400);
  e = createError(Kind::kCompartment, R"({"name":"x","parent_compartment":["a","a"]})");
  EXPECT_EQ(e.code, 400);

  // Making a a child of c closes a -> c -> a; of d is fine.
  auto upd = d().update(Kind::kCompartment, "a", {{"parent_compartment", {"d", "c"}}});
  ASSERT_FALSE(upd.ok());
  EXPECT_EQ(upd.error().code, 409);
  EXPECT_EQ(upd.error().message,
            "compartment 'a': parent_compartment: makes a cycle: a -> c -> a");
  upd = d().update(Kind::kCompartment, "d", {{"parent_compartment", "c"}});
  ASSERT_TRUE(upd.ok()) << upd.error().message;
  // Now a -> d -> c -> a (c's parents are a and b).
  upd = d().update(Kind::kCompartment, "a", {{"parent_compartment", "d"}});
  ASSERT_FALSE(upd.ok());
  EXPECT_EQ(upd.error().message,
            "compartment 'a': parent_compartment: makes a cycle: a -> d -> c -> a");
  EXPECT_TRUE((*d().get(Kind::kCompartment, "a"))["parent_compartment"].is_null());

  // A parent with children stays.
  auto st = d().remove(Kind::kCompartment, "a");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_THAT(st.error().message, HasSubstr("compartment 'a' is a parent of compartment '"));
  ASSERT_TRUE(d().remove(Kind::kCompartment, "d").ok());
  ASSERT_TRUE(d().remove(Kind::kCompartment, "c").ok());
  ASSERT_TRUE(d().remove(Kind::kCompartment, "b").ok());
  ASSERT_TRUE(d().remove(Kind::kCompartment, "a").ok());
  EXPECT_EQ(count(Kind::kCompartment), 0u);
}

TEST_F(DirectoryTest, NetworksAndInterfaces) {
  const json lan = make(Kind::kNetwork, R"({"name":"lan","ring":1,"strategy":"local","cidr":"10.0.0.0/24"})");
  EXPECT_EQ(lan["ring"], 1);
  EXPECT_EQ(lan["cidr"], "10.0.0.0/24");
  make(Kind::kNetwork, R"({"name":"v6","ring":0,"strategy":"vpn","cidr":"fd00::/8"})");
  const json bare = make(Kind::kNetwork, R"({"name":"bare","ring":2,"strategy":"vpn"})");
  EXPECT_FALSE(bare.contains("cidr"));

  struct Case {
    const char* body;
    const char* message;
  };
  const Case cases[] = {
      {R"({"name":"n","ring":3,"strategy":"local"})", "ring: not 0, 1 or 2"},
      {R"({"name":"n","ring":"1","strategy":"local"})", "ring: not 0, 1 or 2"},
      {R"({"name":"n","ring":1.5,"strategy":"local"})", "ring: not 0, 1 or 2"},
      {R"({"name":"n","ring":-1,"strategy":"local"})", "ring: not 0, 1 or 2"},
      {R"({"name":"n","strategy":"local"})", "ring: missing"},
      {R"({"name":"n","ring":1,"strategy":"tunnel"})", "strategy: 'tunnel' is not local or vpn"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"10.0.0.0"})", "is not ADDRESS/PREFIX"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"10.0.0.0/33"})", "prefix '33' is not 0 to 32"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"10.0.0.0/"})", "prefix '' is not 0 to 32"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"10.0.0.256/24"})",
       "'10.0.0.256' is not an IPv4 or IPv6 address"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"10.0.0.1/24"})",
       "has host bits set (the network is 10.0.0.0/24)"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"fd00::1/64"})",
       "has host bits set (the network is fd00::/64)"},
      {R"({"name":"n","ring":1,"strategy":"local","cidr":"fd00::/129"})", "is not 0 to 128"},
      {R"({"name":"n","ring":1,"strategy":"local","mtu":1500})", "network 'n': unknown field 'mtu'"},
  };
  for (const auto& c : cases) {
    const Error e = createError(Kind::kNetwork, c.body);
    EXPECT_EQ(e.code, 400) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
  }

  const json eth = make(Kind::kNetworkInterface,
                        R"({"name":"web-1-lan","network":"lan","node":"web-1","address":"10.0.0.5"})");
  EXPECT_EQ(eth["node"], "web-1");
  EXPECT_EQ(eth["address"], "10.0.0.5");
  make(Kind::kNetworkInterface, R"({"name":"db-v6","network":"v6","node":"db","address":"fd00::5"})");
  make(Kind::kNetworkInterface, R"({"name":"noaddr","network":"bare","node":"db"})");
  Error e = createError(Kind::kNetworkInterface, R"({"name":"x","network":"wan","node":"web-1"})");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.message, "network interface 'x': network: network 'wan' does not exist");
  e = createError(Kind::kNetworkInterface, R"({"name":"x","network":"lan","node":"web-1","address":"10.0.0"})");
  EXPECT_EQ(e.code, 400);
  EXPECT_THAT(e.message, HasSubstr("address: '10.0.0' is not an IPv4 or IPv6 address"));
  e = createError(Kind::kNetworkInterface, R"({"name":"x","network":"lan","node":"a/b"})");
  EXPECT_EQ(e.code, 400);
  e = createError(Kind::kNetworkInterface, R"({"name":"x","network":"lan"})");
  EXPECT_EQ(e.code, 400);
  EXPECT_THAT(e.message, HasSubstr("node: missing"));

  auto st = d().remove(Kind::kNetwork, "lan");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message, "network 'lan' is used by network interface 'web-1-lan'");
  auto moved = d().update(Kind::kNetworkInterface, "web-1-lan", {{"network", "bare"}, {"node", "web-1"}});
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_FALSE(moved->contains("address"));
  ASSERT_TRUE(d().remove(Kind::kNetwork, "lan").ok());
  EXPECT_EQ(count(Kind::kNetwork), 2u);
  EXPECT_EQ(count(Kind::kNetworkInterface), 3u);
}

TEST_F(DirectoryTest, DeletingAUserTakesItsMembershipsAndSessions) {
  make(Kind::kRuleSet, R"({"name":"rs","rules":[]})");
  make(Kind::kRole, R"({"name":"r1","rule_sets":["rs"]})");
  make(Kind::kRole, R"({"name":"r2","rule_sets":[]})");
  makeUser("alice");
  makeUser("bob");
  make(Kind::kMembership, R"({"user":"alice","role":"r1"})");
  make(Kind::kMembership, R"({"user":"alice","role":"r2"})");
  make(Kind::kMembership, R"({"user":"bob","role":"r1"})");
  const int64_t later = clock_.wallMillis() + 60'000;
  ASSERT_TRUE(d().addSession("ha", "alice", later).ok());
  ASSERT_TRUE(d().addSession("hb", "bob", later).ok());

  ASSERT_TRUE(d().remove(Kind::kUser, "alice").ok());
  EXPECT_FALSE(d().get(Kind::kUser, "alice").ok());
  auto ms = d().list(Kind::kMembership);
  ASSERT_EQ(ms->size(), 1u);
  EXPECT_EQ((*ms)[0]["name"], "bob:r1");
  EXPECT_FALSE(d().sessionUser("ha")->has_value());
  EXPECT_FALSE(store_->session("ha")->has_value());
  EXPECT_EQ(*d().sessionUser("hb"), std::optional<std::string>("bob"));
  // r2 is free now.
  EXPECT_TRUE(d().remove(Kind::kRole, "r2").ok());
}

TEST_F(DirectoryTest, ANewPasswordEndsThatUsersSessions) {
  makeUser("alice");
  makeUser("bob");
  const int64_t later = clock_.wallMillis() + 60'000;
  ASSERT_TRUE(d().addSession("ha1", "alice", later).ok());
  ASSERT_TRUE(d().addSession("ha2", "alice", later).ok());
  ASSERT_TRUE(d().addSession("hb", "bob", later).ok());
  // Without a hash the sessions stay.
  ASSERT_TRUE(d().update(Kind::kUser, "alice", {{"name", "alice"}}).ok());
  EXPECT_TRUE(d().sessionUser("ha1")->has_value());

  ASSERT_TRUE(d().update(Kind::kUser, "alice", {{"password_hash", kHash2}}).ok());
  EXPECT_FALSE(store_->session("ha1")->has_value());
  EXPECT_FALSE(store_->session("ha2")->has_value());
  EXPECT_EQ(*d().sessionUser("hb"), std::optional<std::string>("bob"));

  // A refused update leaves them: the bad hash is checked before anything is written.
  ASSERT_TRUE(d().addSession("ha3", "alice", later).ok());
  EXPECT_EQ(d().update(Kind::kUser, "alice", {{"password_hash", "plain"}}).error().code, 400);
  EXPECT_TRUE(store_->session("ha3")->has_value());
  EXPECT_EQ(*d().passwordHash("alice"), std::optional<std::string>(kHash2));
}

TEST_F(DirectoryTest, AnExpiredSessionIsGoneAndDeleted) {
  makeUser("alice");
  const int64_t expires = clock_.wallMillis() + 1000;
  ASSERT_TRUE(d().addSession("h1", "alice", expires).ok());
  ASSERT_TRUE(d().addSession("h2", "alice", expires + 5000).ok());
  EXPECT_EQ(*d().sessionUser("h1"), std::optional<std::string>("alice"));
  clock_.advanceMillis(999);
  EXPECT_TRUE(d().sessionUser("h1")->has_value());
  clock_.advanceMillis(1);  // at its expiry time
  EXPECT_FALSE(d().sessionUser("h1")->has_value());
  EXPECT_FALSE(store_->session("h1")->has_value());
  EXPECT_TRUE(d().sessionUser("h2")->has_value());
  EXPECT_FALSE(d().sessionUser("unknown")->has_value());

  // addSession drops the expired ones it finds.
  clock_.advanceMillis(5000);
  ASSERT_TRUE(store_->session("h2")->has_value());
  ASSERT_TRUE(d().addSession("h3", "alice", clock_.wallMillis() + 1000).ok());
  EXPECT_FALSE(store_->session("h2")->has_value());

  auto none = d().addSession("h4", "bob", clock_.wallMillis() + 1000);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, 404);
  EXPECT_FALSE(store_->session("h4")->has_value());

  ASSERT_TRUE(d().endSession("h3").ok());
  EXPECT_FALSE(d().sessionUser("h3")->has_value());
  EXPECT_TRUE(d().endSession("h3").ok());  // again: harmless
}

TEST_F(DirectoryTest, RulesOfFollowMembershipsRolesAndRuleSets) {
  make(Kind::kRuleSet, R"({"name":"read","rules":[{"effect":"allow","action":"nodes:get","resource":"*"}]})");
  make(Kind::kRuleSet, R"({"name":"write","rules":[
      {"effect":"allow","action":"nodes:create","resource":"ring1/*"},
      {"effect":"deny","action":"nodes:create","resource":"ring1/db"}]})");
  make(Kind::kRuleSet, R"({"name":"other","rules":[{"effect":"allow","action":"*","resource":"*"}]})");
  make(Kind::kRole, R"({"name":"reader","rule_sets":["read"]})");
  make(Kind::kRole, R"({"name":"writer","rule_sets":["write","read"]})");
  make(Kind::kRole, R"({"name":"root","rule_sets":["other"]})");
  makeUser("alice");
  makeUser("bob");
  makeUser("carol");
  make(Kind::kMembership, R"({"user":"alice","role":"reader"})");
  make(Kind::kMembership, R"({"user":"alice","role":"writer"})");
  make(Kind::kMembership, R"({"user":"bob","role":"root"})");

  auto rules = d().rulesOf("alice");
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  // reader: read; writer: write (read already listed).
  ASSERT_EQ(rules->size(), 3u);
  EXPECT_EQ((*rules)[0], json({{"effect", "allow"}, {"action", "nodes:get"}, {"resource", "*"}}));
  EXPECT_EQ((*rules)[1]["action"], "nodes:create");
  EXPECT_EQ((*rules)[2]["effect"], "deny");
  EXPECT_EQ(d().rulesOf("bob")->size(), 1u);
  EXPECT_TRUE(d().rulesOf("carol")->empty());
  EXPECT_TRUE(d().rulesOf("nobody")->empty());

  // A change of a rule set shows at once.
  ASSERT_TRUE(d().update(Kind::kRuleSet, "read", json::parse(R"({"rules":[]})")).ok());
  EXPECT_EQ(d().rulesOf("alice")->size(), 2u);
  ASSERT_TRUE(d().remove(Kind::kMembership, "alice:writer").ok());
  EXPECT_TRUE(d().rulesOf("alice")->empty());
}

TEST_F(DirectoryTest, EnsureAdminCreatesOnceAndThenChangesNothing) {
  auto first = d().ensureAdmin(kHash);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_TRUE(*first);
  EXPECT_EQ(*d().passwordHash("admin"), std::optional<std::string>(kHash));
  auto rules = d().rulesOf("admin");
  ASSERT_TRUE(rules.ok());
  ASSERT_EQ(rules->size(), 1u);
  EXPECT_EQ((*rules)[0], json({{"effect", "allow"}, {"action", "*"}, {"resource", "*"}}));
  EXPECT_EQ((*d().get(Kind::kRole, "admin"))["rule_sets"], json::array({"admin"}));
  EXPECT_TRUE(d().get(Kind::kMembership, "admin:admin").ok());

  const std::string before = d().list(Kind::kUser)->dump() + d().list(Kind::kRole)->dump() +
                             d().list(Kind::kRuleSet)->dump() + d().list(Kind::kMembership)->dump();
  clock_.advanceMillis(10'000);
  auto second = d().ensureAdmin(kHash2);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE(*second);
  EXPECT_EQ(*d().passwordHash("admin"), std::optional<std::string>(kHash));
  const std::string after = d().list(Kind::kUser)->dump() + d().list(Kind::kRole)->dump() +
                            d().list(Kind::kRuleSet)->dump() + d().list(Kind::kMembership)->dump();
  EXPECT_EQ(after, before);
}

TEST_F(DirectoryTest, EnsureAdminWritesNothingWhenSomethingIsInTheWay) {
  // A role "admin" without the user: the rule set made before it is undone too.
  make(Kind::kRole, R"({"name":"admin","rule_sets":[]})");
  auto r = d().ensureAdmin(kHash);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 409);
  EXPECT_THAT(r.error().message, HasSubstr("role 'admin' already exists"));
  EXPECT_FALSE(d().get(Kind::kRuleSet, "admin").ok());
  EXPECT_FALSE(d().get(Kind::kUser, "admin").ok());

  // A bad hash is a 400, and nothing is written either.
  ASSERT_TRUE(d().remove(Kind::kRole, "admin").ok());
  r = d().ensureAdmin("plain-password");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 400);
  EXPECT_EQ(count(Kind::kRuleSet), 0u);
  EXPECT_EQ(count(Kind::kRole), 0u);
  EXPECT_EQ(count(Kind::kUser), 0u);
}

TEST(DirectoryTime, ParsesWhatItPrintsAndMilliseconds) {
  for (int64_t ms : {int64_t{0}, int64_t{1'700'000'000'123}, int64_t{951'782'400'000}}) {
    EXPECT_EQ(parseTime(rfc3339(ms)), ms) << rfc3339(ms);
  }
  EXPECT_EQ(parseTime("1700000000000"), 1'700'000'000'000);
  EXPECT_EQ(parseTime("2023-11-14T22:13:20Z"), 1'700'000'000'000);
  EXPECT_EQ(parseTime("2023-11-14T22:13:20.5Z"), 1'700'000'000'500);
  for (const char* bad : {"", "yesterday", "2023-11-14", "2023-11-14T22:13:20", "2023-13-14T22:13:20Z",
                          "2023-11-14T22:13:20+01:00", "2023-11-14T22:13:20Zjunk",
                          "99999999999999999999", "-5"}) {
    EXPECT_FALSE(parseTime(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace enjin::directory
