#include "net/collector/admin_relay.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstdio>
#include <vector>

#include "persistence/errors.hpp"

namespace outpost::net {

using persistence::StoreError;

namespace {

constexpr const char* kCall = "Outpost-Call";
constexpr const char* kError = "Outpost-Error";
constexpr const char* kNotHere = "Outpost-Not-Here";
constexpr const char* kPart = "Outpost-Part";
constexpr const char* kAnswer = "Outpost-Answer";

using Msg = NatsOwned<natsMsg>;

std::string header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, key, &value) == NATS_OK && value ? value : "";
}

std::string data_of(natsMsg* msg) {
  return std::string(natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "", static_cast<size_t>(natsMsg_GetDataLength(msg)));
}

// The text after the last '.' of a subject.
std::string last_token(const char* subject) {
  std::string s = subject ? subject : "";
  return s.substr(s.rfind('.') + 1);
}

}  // namespace

AdminRelay::AdminRelay(AdminRelayOptions options) : options_(std::move(options)) {
  NatsOptions opts = nats_options(options_.nats, std::chrono::milliseconds(5000));
  // Every subscription's messages through libnats' shared threads: a
  // collector holds one per agent, and a thread each would be thousands.
  natsOptions_UseGlobalMessageDelivery(opts.get(), true);
  nc_ = nats_connect(options_.nats, opts.get(), options_.connect_timeout, "admin relay");
  natsInbox* inbox = nullptr;
  if (natsStatus s = natsInbox_Create(&inbox); s != NATS_OK)
    throw StoreError("admin relay: no inbox: " + nats_status_text(s));
  inbox_ = inbox;
  natsInbox_Destroy(inbox);
  std::string replies = inbox_ + ".*";
  if (natsStatus s = natsConnection_Subscribe(&replies_, nc_.get(), replies.c_str(), &AdminRelay::on_reply, this);
      s != NATS_OK)
    throw StoreError("admin relay: cannot subscribe to " + replies + " on " + nats_where(options_.nats) + ": " +
                     nats_status_text(s));
}

namespace {

// Counts the subscriptions whose last callback has returned.
struct Completion {
  std::mutex mutex;
  std::condition_variable done;
  size_t left = 0;
  static void on_complete(void* self) {
    auto* c = static_cast<Completion*>(self);
    std::lock_guard<std::mutex> lock(c->mutex);
    --c->left;
    c->done.notify_all();
  }
};

}  // namespace

// No callback may run once the members it touches are gone: each
// subscription ends, and its last callback has returned, before they go.
AdminRelay::~AdminRelay() {
  std::vector<natsSubscription*> subs;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [agent, held] : held_) subs.push_back(held.sub);
    held_.clear();
    if (replies_) subs.push_back(replies_);
    replies_ = nullptr;
  }
  auto completion = std::make_unique<Completion>();
  completion->left = subs.size();
  for (auto* sub : subs) {
    if (natsSubscription_SetOnCompleteCB(sub, &Completion::on_complete, completion.get()) != NATS_OK) {
      std::lock_guard<std::mutex> lock(completion->mutex);
      --completion->left;  // closed already (the connection)
    }
    natsSubscription_Unsubscribe(sub);
  }
  std::unique_lock<std::mutex> lock(completion->mutex);
  if (!completion->done.wait_for(lock, std::chrono::seconds(5), [&] { return completion->left == 0; })) {
    spdlog::warn("collector: the admin relay's NATS callbacks did not end within 5 s");
    lock.unlock();
    completion.release();  // a late callback still finds it
  } else {
    lock.unlock();
  }
  for (auto* sub : subs) natsSubscription_Destroy(sub);
}

std::string AdminRelay::subject(const std::string& agent) const {
  return options_.prefix + ".agent." + subject_token(agent);
}

void AdminRelay::start(kj::Timer& timer, kj::TaskSet& tasks, Handler handler, Where where) {
  timer_ = &timer;
  tasks_ = &tasks;
  handler_ = std::move(handler);
  {
    std::lock_guard<std::mutex> lock(where_mutex_);
    where_ = std::move(where);
  }
  tasks.add(mailbox_.serve(tasks));
}

void AdminRelay::stop() {
  std::lock_guard<std::mutex> lock(where_mutex_);
  where_ = nullptr;
}

void AdminRelay::hold(const std::string& agent) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& held = held_[agent];
    if (held.count++ > 0) return;
    std::string subj = subject(agent);
    natsStatus s = natsConnection_Subscribe(&held.sub, nc_.get(), subj.c_str(), &AdminRelay::on_call, this);
    if (s != NATS_OK) {
      held_.erase(agent);
      throw StoreError("admin relay: cannot subscribe to " + subj + ": " + nats_status_text(s));
    }
  }
  // Subscribed only once the server has it: a call or a poke sent after
  // this returns reaches us.
  if (natsStatus s = natsConnection_FlushTimeout(nc_.get(), 5000); s != NATS_OK)
    throw StoreError("admin relay: " + nats_where(options_.nats) + " did not confirm the subscription for agent " +
                     agent + ": " + nats_status_text(s));
}

void AdminRelay::release(const std::string& agent) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = held_.find(agent);
    if (it == held_.end() || --it->second.count > 0) return;
    natsSubscription_Unsubscribe(it->second.sub);
    natsSubscription_Destroy(it->second.sub);
    held_.erase(it);
  }
  // Gone from the server before this returns: a call sent after finds no
  // responder at once instead of waiting out its timeout here. Not
  // confirmed (NATS away): the server forgot us with the connection anyway.
  natsConnection_FlushTimeout(nc_.get(), 5000);
}

void AdminRelay::on_call(natsConnection*, natsSubscription*, natsMsg* raw, void* self) {
  Msg msg(raw);
  Received r;
  r.reply = false;
  r.call.agent = subject_untoken(last_token(natsMsg_GetSubject(raw)));
  r.call.name = header(raw, kCall);
  r.call.body = data_of(raw);
  r.call.reply = natsMsg_GetReply(raw) ? natsMsg_GetReply(raw) : "";
  auto* relay = static_cast<AdminRelay*>(self);
  if (r.call.name == "where") return relay->answer_where(r.call);
  relay->deliver(std::move(r));
}

void AdminRelay::answer_where(const Call& call) noexcept {
  // On libnats' thread: nothing may throw into it.
  try {
    Answer given{Answer::not_here, {}, {}};  // stopped, or started without `where`: as if not held here
    try {
      std::lock_guard<std::mutex> lock(where_mutex_);
      if (where_) given = where_(call.agent);
    } catch (const std::exception& e) {
      given = {Answer::failed, {}, std::string("where: ") + e.what()};
    }
    answer(call, given);
  } catch (const std::exception& e) {
    spdlog::warn("collector: the relay could not answer where {} is: {}", call.agent, e.what());
  }
}

void AdminRelay::on_reply(natsConnection*, natsSubscription*, natsMsg* raw, void* self) {
  Msg msg(raw);
  Received r;
  r.reply = true;
  try {
    r.token = std::stoull(last_token(natsMsg_GetSubject(raw)));
  } catch (const std::exception&) {
    return;  // not an answer of ours
  }
  if (natsMsg_IsNoResponders(raw) || !header(raw, kNotHere).empty()) {
    r.answer.kind = Answer::not_here;
  } else if (auto error = header(raw, kError); !error.empty()) {
    r.answer.kind = Answer::failed;
    r.answer.error = error;
  } else {
    r.answer.body = data_of(raw);
    if (auto part = header(raw, kPart); !part.empty()) {
      unsigned long long i = 0, n = 0;
      if (std::sscanf(part.c_str(), "%llu/%llu", &i, &n) != 2 || i == 0 || i > n) return;  // not ours
      r.part = i;
      r.parts = n;
      r.answer_id = header(raw, kAnswer);
    }
  }
  static_cast<AdminRelay*>(self)->deliver(std::move(r));
}

void AdminRelay::deliver(Received r) {
  mailbox_.post([this, r = std::move(r)]() mutable { take(std::move(r)); });
}

void AdminRelay::take(Received r) {
  if (!r.reply) {
    handler_(std::move(r.call));
    return;
  }
  auto it = asks_.find(r.token);
  if (it == asks_.end()) return;  // timed out already
  if (r.parts) {
    auto& p = partial_[r.token];
    if (p.next == 1 && r.part == 1) p.answer_id = r.answer_id;  // the first answer to start wins
    if (r.answer_id != p.answer_id || r.part != p.next) return;  // another holder's, or out of turn
    if (p.body.size() + r.answer.body.size() > options_.max_answer_bytes) {
      r.answer = {Answer::failed, {}, "the answer is over max_answer_bytes"};
    } else {
      p.body += r.answer.body;
      if (p.next++ < r.parts) return;
      r.answer.body = std::move(p.body);
    }
    partial_.erase(r.token);
  }
  it->second->fulfill(std::move(r.answer));
  asks_.erase(it);
}

kj::Promise<AdminRelay::Answer> AdminRelay::ask(const std::string& agent, const std::string& name,
                                                const std::string& body, std::chrono::milliseconds extra) {
  uint64_t token = next_token_++;
  std::string subj = subject(agent), reply = inbox_ + "." + std::to_string(token);
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subj.c_str(), reply.c_str(), body.data(), static_cast<int>(body.size()));
  Msg msg(raw);
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, kCall, name.c_str());
  if (s == NATS_OK) s = natsConnection_PublishMsg(nc_.get(), raw);
  if (s != NATS_OK)
    return Answer{Answer::failed, {}, "cannot ask the collectors about agent " + agent + " through " +
                                          nats_where(options_.nats) + ": " + nats_status_text(s)};
  auto paf = kj::newPromiseAndFulfiller<Answer>();
  asks_.emplace(token, kj::mv(paf.fulfiller));
  auto wait = options_.answer_timeout + extra;
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(wait).count();
  auto timeout = timer_->afterDelay(wait.count() * kj::MILLISECONDS).then([agent, seconds] {
    return Answer{Answer::failed, {},
                  "the collector holding agent " + agent + " did not answer within " + std::to_string(seconds) + " s"};
  });
  return paf.promise.exclusiveJoin(kj::mv(timeout)).attach(kj::defer([this, token] {
    asks_.erase(token);
    partial_.erase(token);
  }));
}

void AdminRelay::answer(const Call& call, const Answer& given) {
  if (call.reply.empty()) return;
  Answer answer = given;
  if (answer.body.size() > options_.max_answer_bytes)
    answer = {Answer::failed, {},
              "the answer (" + std::to_string(answer.body.size()) + " bytes) is over what the collectors relay (" +
                  std::to_string(options_.max_answer_bytes) + "): ask the collector agent " + call.agent +
                  " is connected to"};
  int64_t limit = natsConnection_GetMaxPayload(nc_.get());
  size_t part_size = limit > 8192 ? static_cast<size_t>(limit - 4096) : 4096;
  size_t parts = answer.kind == Answer::answered && answer.body.size() > part_size
                     ? (answer.body.size() + part_size - 1) / part_size
                     : 1;
  std::string id = inbox_ + "-" + std::to_string(next_answer_++);
  std::string error = answer.error.empty() ? "failed" : answer.error;
  for (auto& c : error)
    if (c == '\r' || c == '\n') c = ' ';  // a header is one line
  natsStatus s = NATS_OK;
  for (size_t i = 0; i < parts && s == NATS_OK; ++i) {
    size_t at = i * part_size, size = parts == 1 ? answer.body.size() : std::min(part_size, answer.body.size() - at);
    natsMsg* raw = nullptr;
    s = natsMsg_Create(&raw, call.reply.c_str(), nullptr, answer.body.data() + at, static_cast<int>(size));
    Msg msg(raw);
    if (s == NATS_OK && answer.kind == Answer::not_here) s = natsMsgHeader_Set(raw, kNotHere, "1");
    if (s == NATS_OK && answer.kind == Answer::failed) s = natsMsgHeader_Set(raw, kError, error.c_str());
    if (s == NATS_OK && parts > 1) {
      std::string part = std::to_string(i + 1) + "/" + std::to_string(parts);
      s = natsMsgHeader_Set(raw, kPart, part.c_str());
      if (s == NATS_OK) s = natsMsgHeader_Set(raw, kAnswer, id.c_str());
    }
    if (s == NATS_OK) s = natsConnection_PublishMsg(nc_.get(), raw);
  }
  if (s != NATS_OK)
    spdlog::warn("collector: cannot answer a {} for agent {} through {}: {}", call.name, call.agent,
                 nats_where(options_.nats), nats_status_text(s));
}

void AdminRelay::poke(const std::string& agent) {
  std::string subj = subject(agent);
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subj.c_str(), nullptr, nullptr, 0);
  Msg msg(raw);
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, kCall, "push");
  if (s == NATS_OK) s = natsConnection_PublishMsg(nc_.get(), raw);
  if (s != NATS_OK)
    spdlog::warn("collector: cannot announce agent {}'s queued requests through {}: {} (it gets them when it "
                 "connects again)",
                 agent, nats_where(options_.nats), nats_status_text(s));
}

}  // namespace outpost::net
