// Prometheus metrics (text exposition format 0.0.4) kept in atomics: counters per channel,
// gauges, and latency histograms with fixed buckets.
#pragma once
#include <atomic>
#include <string>

namespace agent {

constexpr int kChannels = 3;  // email, sms, in_app
int channel_index(const std::string &channel);  // -1 when unknown
const char *channel_name(int i);

class Histogram {
 public:
  static constexpr int kBuckets = 12;
  void observe(double seconds);
  std::string render(const std::string &name, const std::string &labels) const;
 private:
  std::atomic<unsigned long long> counts_[kBuckets + 1] = {};
  std::atomic<unsigned long long> sum_us_{0};
};

struct Metrics {
  std::atomic<unsigned long long> claimed{0};
  std::atomic<unsigned long long> sent[kChannels] = {};
  std::atomic<unsigned long long> failed[kChannels] = {};   // delivery attempts that failed
  std::atomic<unsigned long long> retried{0};      // surveys handed back for a later retry
  std::atomic<unsigned long long> gave_up{0};      // surveys that reached max_attempts (failed)
  std::atomic<unsigned long long> released{0};     // leases given back at shutdown
  std::atomic<unsigned long long> not_reported{0}; // reports refused: the lease was no longer ours
  std::atomic<unsigned long long> answered{0};
  std::atomic<unsigned long long> unsubscribed{0};
  std::atomic<unsigned long long> answer_rejected{0};  // unknown token, closed survey, bad input
  std::atomic<unsigned long long> rate_limited{0};
  std::atomic<unsigned long long> csrf_rejected{0};
  std::atomic<unsigned long long> db_reconnects{0};
  std::atomic<long long> queue_depth{0};   // claimed messages not yet attempted
  std::atomic<long long> in_flight{0};     // claimed messages not yet reported
  std::atomic<int> sender_db_up{0};
  std::atomic<int> collector_db_up{0};
  Histogram send_seconds[kChannels];
  Histogram answer_seconds;

  std::string render() const;
};

Metrics &metrics();

}  // namespace agent
