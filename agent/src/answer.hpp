// The answer page (cpp-httplib), connected as the collector role:
//   GET  …/<token>/<score>   the page with that score chosen and a comment box; records nothing
//   POST …/<token>/<score>   the page's own submission (its script posts the score when a browser
//                            shows it, the form adds the comment): record_response()
//   GET  …/u/<token>         unsubscribe confirmation page; records nothing
//   POST …/u/<token>         opt_out_by_token() (the page's form, or RFC 8058 one-click)
// Link scanners that prefetch URLs only GET, so they neither answer nor unsubscribe anyone.
// POSTs need the CSRF value of the page (signed double-submit cookie) and a same-origin Origin;
// every response carries security headers (CSP with a nonce, no referrer, no framing, no-store);
// requests are rate limited per client address; tokens, ids and comments are never logged.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "config.hpp"

namespace httplib { class Server; }

namespace agent {

class CollectorPool;

class AnswerServer {
 public:
  AnswerServer(const Config &cfg, std::atomic<bool> &stop);
  ~AnswerServer();
  bool start(std::string &error);  // binds and serves in a thread
  void stop();
  bool check(std::string &info);   // --check: connect once as the collector
  bool healthy();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// /healthz and /metrics on their own listener (or the answer page's when the same address).
class OpsServer {
 public:
  OpsServer(const Config &cfg, std::function<bool(std::string &)> health);
  ~OpsServer();
  bool start(std::string &error);
  void stop();
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent
