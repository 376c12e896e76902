#include "enjin/ring/parent_link.hpp"
#include "enjin/ring/offer.hpp"

#include <spdlog/spdlog.h>

#include <deque>
#include <map>

#include "enjin/bus/publisher.hpp"
#include "enjin/bus/subscriber.hpp"
#include "enjin/bus/trust_store.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/messages.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

// Messages the up bus queues before it drops (as the parent's buses: parent.cpp).
constexpr int kBusSendHighWater = 10'000;
constexpr int64_t kChangeCoalesceMs = 5;
}

class ParentLink::Impl {
 public:
  Impl(Reactor& reactor, const Clock& clock, const DaemonConfig& config, Handlers handlers,
       double dropFraction, std::function<uint64_t()> random)
      : reactor_(reactor),
        clock_(clock),
        cfg_(config),
        handlers_(std::move(handlers)),
        dropFraction_(dropFraction),
        random_(std::move(random)) {}

  ~Impl() {
    if (tickTimer_) reactor_.cancelTimer(tickTimer_);
    if (changeTimer_) reactor_.cancelTimer(changeTimer_);
    if (up_) reactor_.removeSocket(up_->socket());
    if (down_) reactor_.removeSocket(down_->socket());
  }

  Status open(zmq::context_t& zmq) {
    auto parent = crypto::loadPublicKey(cfg_.parentKey);
    if (!parent.ok()) return parent.error().wrap("parent key");
    // The parent may say anything on its bus; this node listens only to its own topics.
    if (auto st = trust_.add(*parent, "parent", {""}); !st.ok()) return st;
    auto key = crypto::SecretKey::load(cfg_.key);
    if (!key.ok()) return key.error();
    // On tcp:// both are CURVE clients of the parent (enjin/bus/curve.hpp): the parent's
    // ed25519 key, already trusted, gives the server key.
    auto downKey = crypto::SecretKey::load(cfg_.key);
    if (!downKey.ok()) return downKey.error();
    bus::PublisherOptions po{
        cfg_.parentUp, false, cfg_.stateDir + "/up.seq", kBusSendHighWater, {}};
    po.curve.serverKey = *parent;
    auto up = bus::Publisher::open(zmq, std::move(*key), clock_, po);
    if (!up.ok()) return up.error().wrap("parent's up bus");
    up_ = std::move(*up);
    bus::SubscriberOptions so;
    so.endpoint = cfg_.parentDown;
    so.key = &*downKey;
    so.curve.serverKey = *parent;
    so.verify.prefixes = {"spec." + cfg_.uuid, "cmd." + cfg_.uuid, "revoke." + cfg_.uuid};
    auto down = bus::Subscriber::open(zmq, trust_, clock_, so);
    if (!down.ok()) return down.error().wrap("parent's down bus");
    down_ = std::move(*down);
    reactor_.addSocket(up_->socket(), [this] {
      up_->pollSubscriptions([this](std::string_view, bool subscribed) {
        if (subscribed) publish();  // the parent is listening now: tell it at once
      });
    });
    reactor_.addSocket(down_->socket(), [this] { drain(); });
    tick();
    return {};
  }

  void setApplied(std::string digest) { applied_ = std::move(digest); }

  void changed() {
    if (changeTimer_ != 0) return;
    changeTimer_ = reactor_.addTimerAfterMillis(kChangeCoalesceMs, [this] {
      changeTimer_ = 0;
      publish();
    });
  }

 private:
  void tick() {
    tickTimer_ = reactor_.addTimerAfterMillis(cfg_.heartbeatMs, [this] { tick(); });
    publish();
  }

  void publish() {
    if (revoked_) return;
    json body = handlers_.observe();
    body["spec_digest"] = applied_;
    // The host's capacity, with what the daemon adds of its own (a ring1d's free ports).
    json offer = hostOffer();
    if (auto it = body.find("offer"); it != body.end() && it->is_object()) offer.update(*it);
    body["offer"] = std::move(offer);
    if (!specError_.empty()) body["spec_error"] = specError_;
    if (auto st = up_->publish("obs." + cfg_.uuid, kObservationType, body); !st.ok()) {
      spdlog::warn("{}: {}", daemonName(cfg_.ring), st.error().message);
    }
  }

  void reply(const std::string& id, const json& r) {
    const json body = ReplyMessage::fromAnswer(id, r).toJson();
    if (auto st = up_->publish("reply." + cfg_.uuid, ReplyMessage::kType, body); !st.ok()) {
      spdlog::warn("{}: {}", daemonName(cfg_.ring), st.error().message);
    }
  }

  bool dropForTest() { return faultDropThis(dropFraction_, random_); }

  void drain() {
    down_->drain([this](bus::Message&& m) {
      if (revoked_ || dropForTest()) return;
      // Only the parent's key gets here; still, a body of the wrong shape is refused, not a
      // reason to take this daemon down.
      if (auto st = handle(m); !st.ok()) {
        spdlog::warn("{}: refused a '{}' from the parent: {}", daemonName(cfg_.ring), m.type,
                     st.error().message);
      }
    });
  }

  Status handle(const bus::Message& m) {
    if (m.type == SpecMessage::kType) {
      auto spec = SpecMessage::fromJson(m.body);
      if (!spec.ok()) return spec.error();
      onSpec(*spec);
    } else if (m.type == CommandMessage::kType) {
      auto cmd = CommandMessage::fromJson(m.body);
      if (!cmd.ok()) return cmd.error();
      onCommand(std::move(*cmd));
    } else if (m.type == RevocationMessage::kType) {
      if (auto rev = RevocationMessage::fromJson(m.body); !rev.ok()) return rev.error();
      revoked_ = true;
      spdlog::error("{}: the parent revoked this node's key; stopping", daemonName(cfg_.ring));
      handlers_.onRevoked();
    }
    return {};
  }

  void onCommand(CommandMessage cmd) {
    // One execution per request id; a repeat (the parent sends again until it hears back) gets
    // the answer already given, or nothing while the first is still being worked on.
    if (auto done = replies_.find(cmd.id); done != replies_.end()) {
      if (!done->second.is_null()) reply(cmd.id, done->second);
      return;
    }
    replies_.emplace(cmd.id, nullptr);
    replyOrder_.push_back(cmd.id);
    if (replyOrder_.size() > kRepliesKept) {
      replies_.erase(replyOrder_.front());
      replyOrder_.pop_front();
    }
    handlers_.onCommand(cmd.op, cmd.path, [this, id = cmd.id](json r) {
      if (auto it = replies_.find(id); it != replies_.end()) it->second = r;
      reply(id, r);
    });
  }

  void onSpec(const SpecMessage& m) {
    if (m.parentInstance != parentInstance_) {
      parentInstance_ = m.parentInstance;
      changed();  // a parent that (re)started: tell it everything now, not a heartbeat later
    }
    if (m.digest.empty() || m.digest == applied_ || m.digest == rejected_) return;
    if (auto st = handlers_.onSpec(m.spec, m.digest); !st.ok()) {
      // Kept until the parent sends another: the same one again is not retried, nor logged.
      rejected_ = m.digest;
      specError_ = st.error().message;
      spdlog::error("{}: refused the spec from the parent, the running one stays: {}",
                    daemonName(cfg_.ring), specError_);
    } else {
      applied_ = m.digest;
      specError_.clear();
      rejected_.clear();
    }
    changed();
  }

  Reactor& reactor_;
  const Clock& clock_;
  const DaemonConfig& cfg_;
  Handlers handlers_;
  double dropFraction_;
  std::function<uint64_t()> random_;
  bus::TrustStore trust_;
  std::unique_ptr<bus::Publisher> up_;
  std::unique_ptr<bus::Subscriber> down_;
  std::string applied_, rejected_, specError_, parentInstance_;
  static constexpr size_t kRepliesKept = 256;
  std::map<std::string, json> replies_;  // request id -> the answer (null while in progress)
  std::deque<std::string> replyOrder_;
  bool revoked_ = false;
  Reactor::TimerId tickTimer_ = 0;
  Reactor::TimerId changeTimer_ = 0;
};

Result<std::unique_ptr<ParentLink>> ParentLink::open(Reactor& reactor, const Clock& clock,
                                                     zmq::context_t& zmq,
                                                     const DaemonConfig& config, Handlers handlers,
                                                     double dropFraction,
                                                     std::function<uint64_t()> random) {
  auto impl = std::make_unique<Impl>(reactor, clock, config, std::move(handlers), dropFraction,
                                     std::move(random));
  if (auto st = impl->open(zmq); !st.ok()) return st.error();
  return std::unique_ptr<ParentLink>(new ParentLink(std::move(impl)));
}

ParentLink::ParentLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ParentLink::~ParentLink() = default;
void ParentLink::setApplied(std::string digest) { impl_->setApplied(std::move(digest)); }
void ParentLink::changed() { impl_->changed(); }

}  // namespace enjin::ring
