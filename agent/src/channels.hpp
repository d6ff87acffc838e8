// Delivery channels: email over SMTP (libcurl: STARTTLS or implicit TLS, AUTH, one reused
// connection per worker, MIME multipart/alternative built by libcurl's MIME API) and sms / in_app
// as an HTTP POST of a JSON document to a webhook (libcurl, nlohmann-json). Each channel has its
// own worker threads (concurrency) and a token-bucket rate limit.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

// A batch handed to the channels: send() returns when every message is sent, failed or (on stop)
// released unsent.
class Dispatcher {
 public:
  Dispatcher(const Config &cfg, std::atomic<bool> &stop);
  ~Dispatcher();
  void start();
  void send(const std::vector<Message> &batch, std::vector<Outcome> &out);
  void wake();  // stop requested: idle workers return, queued messages are released

 private:
  struct Job {
    const Message *msg;
    Outcome *out;
  };
  struct Channel {
    const ChannelConfig *cfg;
    std::deque<Job> queue;
    std::unique_ptr<RateLimit> limit;
    std::vector<std::thread> threads;
  };
  void worker(Channel &ch);
  void finish_one();

  const Config &cfg_;
  std::atomic<bool> &stop_;
  Channel channels_[3];
  std::mutex m_;
  std::condition_variable work_cv_, done_cv_;
  int outstanding_ = 0;
  bool shutdown_ = false;
};

}  // namespace agent
