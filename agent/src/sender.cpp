#include "sender.hpp"

#include <poll.h>

#include <algorithm>
#include <iterator>
#include <chrono>
#include <map>
#include <thread>

#include "log.hpp"
#include "metrics.hpp"

namespace agent {

namespace {
const Statement kSenderStatements[] = {
    {"claim_surveys",
     "SELECT id, token, customer_id, channel, attempts FROM nps_billing.claim_surveys($1, $2::integer, $3::interval)", 3},
    {"mark_sent", "SELECT survey_id, ok, status FROM nps_billing.mark_sent($1::bigint[], $2)", 2},
    {"mark_failed", "SELECT survey_id, ok, status FROM nps_billing.mark_failed($1::bigint[], $2, $3, $4::interval)", 4},
    {"has_claim_messages",
     "SELECT coalesce(has_function_privilege(to_regprocedure('nps_billing.claim_messages(text,integer,interval)'), "
     "'EXECUTE'), false)", 0},
};
const Statement kClaimMessages = {
    "claim_messages",
    "SELECT id, token, customer_id, channel, attempts, recipient, locale, subject, body_text, body_html "
    "FROM nps_billing.claim_messages($1, $2::integer, $3::interval)", 3};
}  // namespace

Sender::Sender(const Config &cfg, std::atomic<bool> &stop, int stop_fd)
    : cfg_(cfg), stop_(stop), stop_fd_(stop_fd),
      db_(cfg.sender_conninfo, std::vector<Statement>(std::begin(kSenderStatements), std::end(kSenderStatements))),
      dispatcher_(cfg, stop) {}

bool Sender::healthy() const { return metrics().sender_db_up.load() == 1; }

bool Sender::connect() {
  std::string err;
  if (!db_.connect(err)) {
    log_warning("sender: cannot connect to the database: " + err);
    metrics().sender_db_up = 0;
    return false;
  }
  Result r = db_.run("has_claim_messages", {});
  rendered_ = r.ok() && r.rows() == 1 && r.get(0, 0) == "t";
  if (rendered_) {
    Result p(PQprepare(db_.raw(), kClaimMessages.name, kClaimMessages.sql, kClaimMessages.nparams, nullptr));
    if (!p.ok()) {
      log_warning("sender: claim_messages cannot be prepared (" + p.sqlstate() + "), using claim_surveys");
      rendered_ = false;
    }
  }
  Result l = db_.exec("LISTEN nps_billing_survey");
  if (!l.ok()) {
    log_warning("sender: LISTEN failed: " + l.sqlstate() + " " + l.message());
    db_.close();
    return false;
  }
  metrics().sender_db_up = 1;
  log_info(std::string("sender: connected; messages ") +
           (rendered_ ? "rendered by claim_messages()" : "built in (claim_surveys(); the extension has no claim_messages)"));
  return true;
}

bool Sender::check(std::string &info) {
  if (!connect()) return false;
  info = rendered_ ? "claim_messages" : "claim_surveys (built-in message)";
  db_.close();
  return true;
}

void Sender::sleep_interruptible(int seconds) {
  pollfd p{stop_fd_, POLLIN, 0};
  poll(&p, 1, seconds * 1000);
}

Sender::Woken Sender::wait(int milliseconds) {
  PGconn *c = db_.connected() ? db_.raw() : nullptr;
  auto notified = [c] {
    bool any = false;
    PQconsumeInput(c);
    while (PGnotify *n = PQnotifies(c)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  };
  if (c && notified()) return Woken::notified;
  if (stop_) return Woken::stop;
  pollfd p[3] = {{stop_fd_, POLLIN, 0}, {dispatcher_.done_fd(), POLLIN, 0}, {c ? PQsocket(c) : -1, POLLIN, 0}};
  if (poll(p, 3, milliseconds < 0 ? 0 : milliseconds) <= 0) return Woken::timeout;
  if (p[0].revents) return Woken::stop;
  if (p[1].revents) return Woken::dispatcher;
  if (p[2].revents) {
    if (notified()) return Woken::notified;
    if (PQstatus(c) != CONNECTION_OK || (p[2].revents & (POLLERR | POLLHUP | POLLNVAL))) return Woken::connection;
  }
  return Woken::timeout;
}

bool Sender::claim(std::vector<Message> &batch) {
  Result r = db_.run(rendered_ ? "claim_messages" : "claim_surveys",
                     {cfg_.worker, std::to_string(cfg_.batch), cfg_.lease});
  if (!r.ok()) {
    if (!db_.broken()) {
      log_error("sender: claim failed: " + r.sqlstate() + " " + r.message());
      sleep_interruptible(cfg_.poll_interval);
    }
    return false;
  }
  batch.resize(r.rows());
  for (int i = 0; i < r.rows(); i++) {
    Message &m = batch[i];
    m.id = std::stoll(r.get(i, 0));
    m.token = r.get(i, 1);
    m.customer_id = r.get(i, 2);
    m.channel = r.get(i, 3);
    m.attempts = std::stoi(r.get(i, 4));
    if (rendered_) {
      m.has_recipient = !r.null(i, 5);
      m.recipient = r.get(i, 5);
      m.locale = r.get(i, 6);
      m.subject = r.get(i, 7);
      m.body_text = r.get(i, 8);
      m.body_html = r.get(i, 9);
      if (r.null(i, 8)) fallback_render(cfg_, m);
      else if (!m.has_recipient) {
        Message f = m;
        fallback_render(cfg_, f);
        m.recipient = f.recipient;
      }
    } else {
      fallback_render(cfg_, m);
    }
  }
  metrics().claimed += batch.size();
  metrics().in_flight += static_cast<long long>(batch.size());
  return true;
}

void Sender::queue_reports(const std::vector<Message> &batch, const std::vector<Outcome> &out) {
  Report sent{true, {}, "", 0};
  std::map<std::pair<std::string, int>, std::vector<long long>> failed;
  for (size_t i = 0; i < batch.size(); i++) {
    const Outcome &o = out[i];
    if (o.state == Outcome::sent) {
      sent.ids.push_back(batch[i].id);
    } else if (o.state == Outcome::released) {
      failed[{"released unsent when the agent stopped", 0}].push_back(batch[i].id);
      metrics().released++;
    } else {
      // Exponential backoff with the attempt number: retry_after, 2x, 4x, ... at most retry_max;
      // a channel the agent does not serve waits retry_max.
      long long secs = cfg_.retry_after;
      for (int a = 1; a < batch[i].attempts && secs < cfg_.retry_max; a++) secs *= 2;
      if (o.error.rfind("channel ", 0) == 0) secs = cfg_.retry_max;
      secs = std::min<long long>(secs, cfg_.retry_max);
      failed[{o.error, static_cast<int>(secs)}].push_back(batch[i].id);
    }
  }
  if (!sent.ids.empty()) reports_.push_back(std::move(sent));
  for (auto &f : failed) reports_.push_back(Report{false, std::move(f.second), f.first.first, f.first.second});
}

bool Sender::flush_reports() {
  while (!reports_.empty()) {
    Report &rep = reports_.front();
    Result r = rep.sent ? db_.run("mark_sent", {bigint_array(rep.ids), cfg_.worker})
                        : db_.run("mark_failed", {bigint_array(rep.ids), cfg_.worker, rep.error,
                                                  std::to_string(rep.retry_seconds) + " seconds"});
    if (!r.ok()) {
      if (db_.broken()) return false;  // kept: sent again after reconnecting
      log_error(std::string("sender: ") + (rep.sent ? "mark_sent" : "mark_failed") + " failed: " + r.sqlstate() +
                " " + r.message());
    } else {
      long long refused = 0;
      for (int i = 0; i < r.rows(); i++) {
        if (r.get(i, 1) != "t") refused++;
        else if (!rep.sent && r.get(i, 2) == "pending" && rep.retry_seconds > 0) metrics().retried++;
        else if (!rep.sent && r.get(i, 2) == "failed") metrics().gave_up++;
      }
      if (refused) {
        metrics().not_reported += refused;
        log_warning("sender: " + std::to_string(refused) +
                    " surveys not reported: their lease is no longer held by this worker");
      }
      if (!rep.sent && rep.retry_seconds > 0)
        log_info("sender: " + std::to_string(rep.ids.size()) + " deliveries failed (" + rep.error + "), retry in " +
                 std::to_string(rep.retry_seconds) + " s");
    }
    metrics().in_flight -= static_cast<long long>(rep.ids.size());
    reports_.erase(reports_.begin());
  }
  return true;
}

void Sender::collect() {
  for (auto &b : dispatcher_.take_done()) queue_reports(b->msgs, b->out);
}

void Sender::run() {
  std::string err;
  if (!dispatcher_.start(err)) {
    log_error("sender: " + err);
    return;
  }
  // The next batch is claimed when the workers have half a batch left to start.
  const size_t low_water = static_cast<size_t>(cfg_.batch) / 2;
  dispatcher_.set_low_water(low_water);
  int backoff = 1;
  // The last claim found less than a batch: claim again after a notification, the poll
  // interval or a finished batch.
  bool idle = false;
  auto next_poll = std::chrono::steady_clock::now();
  while (!stop_) {
    if (!db_.connected()) {
      metrics().sender_db_up = 0;
      if (!connect()) {
        sleep_interruptible(backoff);
        backoff = std::min(backoff * 2, 30);
        continue;
      }
      if (backoff > 1 || metrics().claimed > 0) metrics().db_reconnects++;
      backoff = 1;
      idle = false;
    }
    collect();
    if (!flush_reports()) {
      log_warning("sender: database connection lost while reporting, reconnecting");
      db_.close();
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (idle && now >= next_poll) idle = false;
    size_t out = dispatcher_.batches();
    if (!idle && (out == 0 || (out == 1 && dispatcher_.waiting() <= low_water))) {
      auto b = std::make_unique<Batch>();
      if (!claim(b->msgs)) {
        if (db_.broken()) log_warning("sender: database connection lost, reconnecting");
        db_.close();
        continue;
      }
      if (b->msgs.size() < static_cast<size_t>(cfg_.batch)) {
        idle = true;
        next_poll = now + std::chrono::seconds(cfg_.poll_interval);
      }
      if (!b->msgs.empty()) {
        log_debug("sender: claimed " + std::to_string(b->msgs.size()) + " surveys");
        dispatcher_.submit(std::move(b));
      }
      continue;
    }
    int ms = 1000;
    if (idle)
      ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next_poll - now).count());
    Woken w = wait(ms);
    if (w == Woken::notified || w == Woken::dispatcher) idle = false;
  }
  // Stopping: what is queued is released (wake), the messages in progress finish.
  dispatcher_.wake();
  for (;;) {
    collect();
    if (dispatcher_.batches() == 0) break;
    pollfd p{dispatcher_.done_fd(), POLLIN, 0};
    poll(&p, 1, 200);
  }
  // Report what was sent and release what was not, reconnecting a few times if needed.
  for (int i = 0; i < 5 && !reports_.empty(); i++) {
    if (!db_.connected() && !connect()) { std::this_thread::sleep_for(std::chrono::seconds(1)); continue; }
    if (!flush_reports()) db_.close();
  }
  if (!reports_.empty())
    log_error("sender: stopping with unreported surveys; their leases run out and they are sent again");
  db_.close();
  metrics().sender_db_up = 0;
}

}  // namespace agent
