#include "metrics.hpp"

#include <cstdio>

namespace agent {

namespace {
const double kBounds[Histogram::kBuckets] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,   0.25,   0.5,   1,    2.5,   10};
const char *kChannelNames[kChannels] = {"email", "sms", "in_app"};

std::string fmt(double d) {
  char b[64];
  std::snprintf(b, sizeof b, "%g", d);
  return b;
}
}  // namespace

int channel_index(const std::string &c) {
  for (int i = 0; i < kChannels; i++) if (c == kChannelNames[i]) return i;
  return -1;
}
const char *channel_name(int i) { return kChannelNames[i]; }

Metrics &metrics() {
  static Metrics m;
  return m;
}

void Histogram::observe(double s) {
  int i = 0;
  while (i < kBuckets && s > kBounds[i]) i++;
  counts_[i]++;
  sum_us_ += static_cast<unsigned long long>(s * 1e6);
}

std::string Histogram::render(const std::string &name, const std::string &labels) const {
  std::string out, sep = labels.empty() ? "" : ",";
  unsigned long long cum = 0;
  for (int i = 0; i <= kBuckets; i++) {
    cum += counts_[i].load();
    out += name + "_bucket{" + labels + sep + "le=\"" + (i < kBuckets ? fmt(kBounds[i]) : "+Inf") + "\"} " +
           std::to_string(cum) + "\n";
  }
  std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + fmt(sum_us_.load() / 1e6) + "\n";
  out += name + "_count" + l + " " + std::to_string(cum) + "\n";
  return out;
}

std::string Metrics::render() const {
  std::string o;
  auto counter = [&](const char *name, const char *help, unsigned long long v) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
         std::to_string(v) + "\n";
  };
  auto gauge = [&](const char *name, const char *help, long long v) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " +
         std::to_string(v) + "\n";
  };
  auto per_channel = [&](const char *name, const char *help, const std::atomic<unsigned long long> *v) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (int i = 0; i < kChannels; i++)
      o += std::string(name) + "{channel=\"" + kChannelNames[i] + "\"} " + std::to_string(v[i].load()) + "\n";
  };
  counter("nps_agent_claimed_total", "Surveys claimed from the queue.", claimed);
  per_channel("nps_agent_sent_total", "Messages delivered and reported sent.", sent);
  per_channel("nps_agent_failed_total", "Delivery attempts that failed.", failed);
  counter("nps_agent_retried_total", "Surveys handed back to the queue for a later retry.", retried);
  counter("nps_agent_gave_up_total", "Surveys that reached max_attempts and became failed.", gave_up);
  counter("nps_agent_released_total", "Leases released unsent at shutdown.", released);
  counter("nps_agent_not_reported_total", "Reports refused because the lease was no longer held.", not_reported);
  counter("nps_agent_answered_total", "Answers recorded by the answer page.", answered);
  counter("nps_agent_unsubscribed_total", "Unsubscribe confirmations recorded.", unsubscribed);
  counter("nps_agent_answer_rejected_total", "Answer page requests refused (unknown link, closed survey, bad input).", answer_rejected);
  counter("nps_agent_rate_limited_total", "Answer page requests refused by the per-address rate limit.", rate_limited);
  counter("nps_agent_csrf_rejected_total", "Answer page posts refused by the CSRF check.", csrf_rejected);
  counter("nps_agent_db_reconnects_total", "Database reconnections.", db_reconnects);
  gauge("nps_agent_queue_depth", "Claimed messages waiting for a channel worker.", queue_depth);
  gauge("nps_agent_in_flight", "Claimed messages not yet reported to the database.", in_flight);
  gauge("nps_agent_sender_db_up", "1 when the sender connection is up.", sender_db_up);
  gauge("nps_agent_collector_db_up", "1 when the answer page reached the database last time.", collector_db_up);
  o += "# HELP nps_agent_send_seconds Time to deliver one message.\n# TYPE nps_agent_send_seconds histogram\n";
  for (int i = 0; i < kChannels; i++)
    o += send_seconds[i].render("nps_agent_send_seconds", std::string("channel=\"") + kChannelNames[i] + "\"");
  o += "# HELP nps_agent_answer_seconds Time to record one answer.\n# TYPE nps_agent_answer_seconds histogram\n";
  o += answer_seconds.render("nps_agent_answer_seconds", "");
  return o;
}

}  // namespace agent
