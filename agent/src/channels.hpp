// Delivery channels: email over SMTP (libcurl: STARTTLS or implicit TLS, AUTH, one reused
// connection per worker, MIME multipart/alternative built by libcurl's MIME API) and sms / in_app
// as an HTTP POST of a JSON document to a webhook (libcurl, nlohmann-json). Each channel has its
// own worker threads (concurrency, dispatcher.hpp) and a token-bucket rate limit.
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "config.hpp"
#include "message.hpp"

namespace agent {

struct Outcome {
  enum State { pending, sent, failed, released } state = pending;
  std::string error;  // a class of error for mark_failed: never an address or a token
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual Outcome send(const Message &m) = 0;
};

std::unique_ptr<Transport> make_transport(const Config &cfg, const ChannelConfig &ch);

class RateLimit {
 public:
  explicit RateLimit(double rate) : rate_(rate), tokens_(rate > 1 ? rate : 1) {}
  // Waits for a token; false when stop was requested meanwhile.
  bool acquire(const std::atomic<bool> &stop);
 private:
  double rate_, tokens_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::mutex m_;
};

}  // namespace agent
