#include "answer.hpp"

#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <iterator>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "db.hpp"
#include "log.hpp"
#include "message.hpp"
#include "metrics.hpp"
#include "pages.hpp"

namespace agent {

namespace {

const Statement kCollectorStatements[] = {
    {"survey_for_token", "SELECT status, locale, closed FROM nps_billing.survey_for_token($1)", 1},
    {"record_response", "SELECT nps_billing.record_response($1, $2::integer, $3)", 3},
};
const char *kOptOut = "SELECT nps_billing.opt_out_by_token($1)";

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Per-address token buckets: rate_per_minute requests, bursts up to the same number.
class IpLimiter {
 public:
  explicit IpLimiter(int per_minute) : per_minute_(per_minute) {}
  bool allow(const std::string &ip) {
    if (per_minute_ <= 0) return true;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> g(m_);
    if (buckets_.size() > 100000) {  // forget idle addresses
      for (auto it = buckets_.begin(); it != buckets_.end();)
        it = now - it->second.last > std::chrono::minutes(2) ? buckets_.erase(it) : std::next(it);
    }
    auto &b = buckets_.try_emplace(ip, Bucket{static_cast<double>(per_minute_), now}).first->second;
    b.tokens += std::chrono::duration<double>(now - b.last).count() * per_minute_ / 60.0;
    if (b.tokens > per_minute_) b.tokens = per_minute_;
    b.last = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point last;
  };
  int per_minute_;
  std::mutex m_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace

// Collector connections, shared by the server's threads and handed out first come, first served:
// a request waiting for a connection is never overtaken by a later one, so none waits much
// longer than the others (the tail latency). Reconnected when found broken.
class CollectorPool {
 public:
  explicit CollectorPool(const Config &cfg) {
    for (int i = 0; i < cfg.answer_db_connections; i++)
      free_.push_back(std::make_unique<Db>(cfg.collector_conninfo,
          std::vector<Statement>(std::begin(kCollectorStatements), std::end(kCollectorStatements))));
  }
  std::unique_ptr<Db> take() {
    std::unique_ptr<Db> db;
    {
      std::unique_lock<std::mutex> lk(m_);
      if (!free_.empty() && waiters_.empty()) {
        db = std::move(free_.back());
        free_.pop_back();
      } else {
        Waiter w;
        waiters_.push_back(&w);
        if (!w.cv.wait_for(lk, std::chrono::seconds(5), [&w] { return w.db != nullptr; })) {
          waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &w));
          return nullptr;
        }
        db = std::move(w.db);
      }
    }
    if (!db->connected()) {
      std::string err;
      if (!db->connect(err)) {
        log_warning("answer page: cannot connect to the database: " + err);
        metrics().collector_db_up = 0;
        give(std::move(db));
        return nullptr;
      }
      metrics().db_reconnects++;
    }
    metrics().collector_db_up = 1;
    return db;
  }
  void give(std::unique_ptr<Db> db) {
    if (db->broken()) db->close();
    std::lock_guard<std::mutex> g(m_);
    if (!waiters_.empty()) {  // straight to the oldest waiter
      Waiter *w = waiters_.front();
      waiters_.pop_front();
      w->db = std::move(db);
      w->cv.notify_one();
    } else {
      free_.push_back(std::move(db));
    }
  }
 private:
  struct Waiter {
    std::condition_variable cv;
    std::unique_ptr<Db> db;
  };
  std::mutex m_;
  std::deque<Waiter *> waiters_;
  std::vector<std::unique_ptr<Db>> free_;
};

struct AnswerServer::Impl {
  const Config &cfg;
  std::atomic<bool> &stop;
  httplib::Server srv;
  std::thread thread;
  CollectorPool pool;
  IpLimiter limiter;
  std::string secret;
  bool secure_cookie;

  Impl(const Config &c, std::atomic<bool> &s)
      : cfg(c), stop(s), pool(c), limiter(c.answer_rate_per_ip),
        secret(c.answer_secret.empty() ? random_urlsafe(32) : c.answer_secret),
        secure_cookie(c.answer_public_origin.rfind("https://", 0) == 0) {}

  // --- CSRF: "<nonce>.<expiry>.<HMAC-SHA256(secret, nonce.expiry)>", in the page and a cookie.
  std::string sign(const std::string &data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char *>(data.data()), data.size(), md, &n);
    return base64url(md, n);
  }
  std::string new_csrf() {
    std::string data = random_urlsafe(12) + "." + std::to_string(std::time(nullptr) + 86400);
    return data + "." + sign(data);
  }
  bool csrf_valid(const std::string &v) {
    auto p2 = v.rfind('.');
    if (p2 == std::string::npos || v.size() > 200) return false;
    auto p1 = v.rfind('.', p2 - 1);
    if (p1 == std::string::npos || p1 == 0) return false;
    std::string data = v.substr(0, p2), mac = v.substr(p2 + 1), good = sign(data);
    if (mac.size() != good.size() || CRYPTO_memcmp(mac.data(), good.data(), mac.size()) != 0) return false;
    long long expiry = std::atoll(v.substr(p1 + 1, p2 - p1 - 1).c_str());
    return expiry > std::time(nullptr);
  }
  static std::string cookie_value(const httplib::Request &req, const std::string &name) {
    std::string c = req.get_header_value("Cookie");
    size_t pos = 0;
    while (pos < c.size()) {
      auto end = c.find(';', pos);
      if (end == std::string::npos) end = c.size();
      std::string item = c.substr(pos, end - pos);
      while (!item.empty() && item[0] == ' ') item.erase(0, 1);
      if (item.compare(0, name.size() + 1, name + "=") == 0) return item.substr(name.size() + 1);
      pos = end + 1;
    }
    return "";
  }
  // Defence in depth on top of the signed double-submit value: a browser's cross-site POST says
  // so (Sec-Fetch-Site) or names its origin. "Origin: null" is what a same-origin form POST sends
  // under Referrer-Policy: no-referrer, so it is not a refusal by itself.
  bool same_origin(const httplib::Request &req) {
    std::string site = req.get_header_value("Sec-Fetch-Site");
    if (site == "cross-site" || site == "same-site") return false;
    std::string origin = req.get_header_value("Origin");
    if (origin.empty() || origin == "null") return true;
    if (!cfg.answer_public_origin.empty()) return origin == cfg.answer_public_origin;
    std::string host = req.get_header_value("Host");
    return origin == "http://" + host || origin == "https://" + host;
  }
  bool csrf_ok(const httplib::Request &req) {
    std::string form = req.has_param("csrf") ? req.get_param_value("csrf") : "";
    std::string cookie = cookie_value(req, "nps_csrf");
    bool ok = same_origin(req) && !form.empty() && form == cookie && csrf_valid(form);
    if (!ok) metrics().csrf_rejected++;
    return ok;
  }

  std::string client_ip(const httplib::Request &req) {
    if (cfg.answer_trust_proxy) {
      std::string xff = req.get_header_value("X-Forwarded-For");
      if (!xff.empty()) {
        auto p = xff.rfind(',');
        std::string ip = p == std::string::npos ? xff : xff.substr(p + 1);
        while (!ip.empty() && ip[0] == ' ') ip.erase(0, 1);
        return ip;
      }
    }
    return req.remote_addr;
  }

  void headers(httplib::Response &res, const std::string &nonce) {
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'nonce-" + nonce + "'; style-src 'nonce-" + nonce +
                       "'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Cache-Control", "no-store");
    res.set_header("Cross-Origin-Opener-Policy", "same-origin");
    res.set_header("Cross-Origin-Resource-Policy", "same-origin");
    res.set_header("Permissions-Policy", "camera=(), microphone=(), geolocation=()");
    res.set_header("X-Robots-Tag", "noindex, nofollow");
    if (secure_cookie) res.set_header("Strict-Transport-Security", "max-age=31536000");
  }

  void page(httplib::Response &res, int status, const std::string &html, const std::string &nonce) {
    headers(res, nonce);
    res.status = status;
    res.set_content(html, "text/html; charset=utf-8");
  }

  void message(httplib::Response &res, int status, const Strings &s, const std::string &title,
               const std::string &text, bool json) {
    if (json) {
      headers(res, random_urlsafe(12));
      res.status = status;
      res.set_content(std::string("{\"ok\":") + (status == 200 ? "true" : "false") + "}", "application/json");
      return;
    }
    PageOptions o{random_urlsafe(12), ""};
    page(res, status, message_page(s, title, text, o), o.nonce);
  }

  // Runs fn(db) on a pooled connection, and once more on a fresh one when the connection turned
  // out broken (the database restarted since it was last used). False: no database.
  template <class F>
  bool with_db(F fn) {
    for (int attempt = 0; attempt < 2; attempt++) {
      auto db = pool.take();
      if (!db) return false;
      fn(*db);
      bool broken = db->broken();
      pool.give(std::move(db));
      if (!broken) return true;
      metrics().collector_db_up = 0;
    }
    return false;
  }

  // survey_for_token: status and locale of a survey (no row for an unknown token).
  struct Lookup {
    bool db_ok = false, found = false, closed = false;
    std::string status, locale;
  };
  Lookup lookup(const std::string &token) {
    Lookup l;
    with_db([&](Db &db) {
      Result r = db.run("survey_for_token", {token});
      l = Lookup();
      if (r.ok()) {
        l.db_ok = true;
        if (r.rows() > 0) {
          l.found = true;
          l.status = r.get(0, 0);
          l.locale = r.null(0, 1) ? "" : r.get(0, 1);
          l.closed = r.get(0, 2) == "t";
        }
      } else if (!db.broken()) {
        log_warning("answer page: survey_for_token failed: " + r.sqlstate());
      }
    });
    return l;
  }

  void get_score(const httplib::Request &req, httplib::Response &res, const std::string &token, int score) {
    Lookup l = lookup(token);
    const Strings &s = strings_for(l.locale, cfg.answer_default_locale);
    if (!l.db_ok) return message(res, 503, s, s.title, s.busy, false);
    if (!l.found) { metrics().answer_rejected++; return message(res, 404, s, s.title, s.invalid, false); }
    if (l.closed) { metrics().answer_rejected++; return message(res, 410, s, s.title, s.closed, false); }
    (void)req;
    PageOptions o{random_urlsafe(12), new_csrf()};
    res.set_header("Set-Cookie", "nps_csrf=" + o.csrf + "; Path=/; Max-Age=86400; HttpOnly; SameSite=Strict" +
                                     (secure_cookie ? "; Secure" : ""));
    bool answered = l.status == "responded";
    page(res, 200, score_page(s, score, !answered, answered, o), o.nonce);
  }

  void post_score(const httplib::Request &req, httplib::Response &res, const std::string &token) {
    auto t0 = std::chrono::steady_clock::now();
    bool json = req.has_param("ajax");
    const Strings &en = strings_for("", cfg.answer_default_locale);
    if (!csrf_ok(req)) return message(res, 403, en, en.title, en.bad_request, json);
    std::string sc = req.has_param("score") ? req.get_param_value("score") : "";
    if (sc.empty() || sc.size() > 2 || sc.find_first_not_of("0123456789") != std::string::npos || std::stoi(sc) > 10) {
      metrics().answer_rejected++;
      return message(res, 400, en, en.title, en.bad_request, json);
    }
    Param comment;
    if (req.has_param("comment")) {
      std::string c = req.get_param_value("comment");
      if (!c.empty()) comment = c;
    }
    Result r(nullptr);
    std::string locale;
    bool reached = with_db([&](Db &db) {
      r = db.run("record_response", {token, sc, comment});
      if (!json && r.ok()) {  // the thank-you page is in the survey's language
        Result l = db.run("survey_for_token", {token});
        if (l.ok() && l.rows() > 0 && !l.null(0, 1)) locale = l.get(0, 1);
      }
    });
    bool broken = !reached;
    const Strings &s = strings_for(locale, cfg.answer_default_locale);
    if (r.ok()) {
      metrics().answered++;
      metrics().answer_seconds.observe(since(t0));
      return message(res, 200, s, s.thanks, s.thanks_more, json);
    }
    std::string state = r.sqlstate();
    if (broken || state.empty()) {
      metrics().collector_db_up = 0;
      return message(res, 503, s, s.title, s.busy, json);
    }
    metrics().answer_rejected++;
    if (state == "P0002") return message(res, 404, s, s.title, s.invalid, json);
    if (state == "22023") return message(res, 410, s, s.title, s.closed, json);
    if (state == "22001") return message(res, 400, s, s.title, s.comment_too_long, json);
    if (state == "22003" || state == "22P02" || state == "22021") return message(res, 400, s, s.title, s.bad_request, json);
    log_warning("answer page: record_response failed: " + state);
    return message(res, 503, s, s.title, s.busy, json);
  }

  void get_unsubscribe(httplib::Response &res, const std::string &token) {
    Lookup l = lookup(token);  // only for the language: the page is the same for any token
    const Strings &s = strings_for(l.locale, cfg.answer_default_locale);
    PageOptions o{random_urlsafe(12), new_csrf()};
    res.set_header("Set-Cookie", "nps_csrf=" + o.csrf + "; Path=/; Max-Age=86400; HttpOnly; SameSite=Strict" +
                                     (secure_cookie ? "; Secure" : ""));
    page(res, 200, unsubscribe_page(s, o), o.nonce);
  }

  void post_unsubscribe(const httplib::Request &req, httplib::Response &res, const std::string &token) {
    // RFC 8058 one-click: the mail provider POSTs "List-Unsubscribe=One-Click" without a page.
    bool one_click = req.has_param("List-Unsubscribe") && req.get_param_value("List-Unsubscribe") == "One-Click";
    const Strings &en = strings_for("", cfg.answer_default_locale);
    if (!one_click && !csrf_ok(req)) return message(res, 403, en, en.title, en.bad_request, false);
    std::string locale;
    Result r(nullptr);
    with_db([&](Db &db) {
      Result l = db.run("survey_for_token", {token});
      if (l.ok() && l.rows() > 0 && !l.null(0, 1)) locale = l.get(0, 1);
      const char *vals[] = {token.c_str()};
      r = Result(PQexecParams(db.raw(), kOptOut, 1, nullptr, vals, nullptr, nullptr, 0));
    });
    const Strings &s = strings_for(locale, cfg.answer_default_locale);
    if (!r.ok()) {
      log_warning("answer page: opt_out_by_token failed: " + r.sqlstate());
      return message(res, 503, s, s.unsub_title, s.busy, false);
    }
    metrics().unsubscribed++;
    message(res, 200, s, s.unsub_title, s.unsub_done, false);
  }

  // Routes by the last path segments, whatever prefix the public base URL has.
  void route(const httplib::Request &req, httplib::Response &res, bool post) {
    const Strings &en = strings_for("", cfg.answer_default_locale);
    if (!limiter.allow(client_ip(req))) {
      metrics().rate_limited++;
      res.set_header("Retry-After", "60");
      return message(res, 429, en, en.title, en.too_many, req.has_param("ajax"));
    }
    std::vector<std::string> seg;
    const std::string &p = req.path;
    size_t i = 0;
    while (i < p.size()) {
      auto j = p.find('/', i);
      if (j == std::string::npos) j = p.size();
      if (j > i) seg.push_back(p.substr(i, j - i));
      i = j + 1;
    }
    size_t n = seg.size();
    if (n >= 2 && seg[n - 2] == "u" && valid_token(seg[n - 1])) {
      return post ? post_unsubscribe(req, res, seg[n - 1]) : get_unsubscribe(res, seg[n - 1]);
    }
    if (n >= 2 && valid_token(seg[n - 2]) && !seg[n - 1].empty() && seg[n - 1].size() <= 2 &&
        seg[n - 1].find_first_not_of("0123456789") == std::string::npos && std::stoi(seg[n - 1]) <= 10) {
      return post ? post_score(req, res, seg[n - 2]) : get_score(req, res, seg[n - 2], std::stoi(seg[n - 1]));
    }
    metrics().answer_rejected++;
    message(res, 404, en, en.title, en.invalid, false);
  }
};

AnswerServer::AnswerServer(const Config &cfg, std::atomic<bool> &stop) : impl_(std::make_unique<Impl>(cfg, stop)) {}
AnswerServer::~AnswerServer() { stop(); }

bool AnswerServer::start(std::string &error) {
  Impl &m = *impl_;
  int threads = m.cfg.answer_threads;
  m.srv.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // cpp-httplib writes a response's headers and body with two send()s: with Nagle's algorithm on,
  // the body waits for the client's (delayed, up to 40 ms) ACK of the headers on a keep-alive
  // connection.
  m.srv.set_tcp_nodelay(true);
  m.srv.set_keep_alive_max_count(1000);
  m.srv.set_keep_alive_timeout(10);
  m.srv.set_read_timeout(10, 0);
  m.srv.set_write_timeout(10, 0);
  m.srv.set_payload_max_length(64 * 1024);
  m.srv.Get(".*", [&m](const httplib::Request &req, httplib::Response &res) { m.route(req, res, false); });
  m.srv.Post(".*", [&m](const httplib::Request &req, httplib::Response &res) { m.route(req, res, true); });
  std::string host;
  int port = 0;
  split_listen(m.cfg.answer_listen, host, port);
  if (!m.srv.bind_to_port(host.c_str(), port)) {
    error = "answer page: cannot listen on " + m.cfg.answer_listen;
    return false;
  }
  if (auto db = m.pool.take()) m.pool.give(std::move(db));  // connect one now: /healthz tells
  m.thread = std::thread([&m] { m.srv.listen_after_bind(); });
  log_info("answer page: listening on " + m.cfg.answer_listen);
  return true;
}

void AnswerServer::stop() {
  if (!impl_) return;
  impl_->srv.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool AnswerServer::check(std::string &info) {
  auto db = impl_->pool.take();
  if (!db) return false;
  Result r = db->run("survey_for_token", {"nps-agent-check-token"});
  impl_->pool.give(std::move(db));
  if (!r.ok()) { info = "survey_for_token: " + r.sqlstate() + " " + r.message(); return false; }
  info = "collector connection ok";
  return true;
}

bool AnswerServer::healthy() {
  return metrics().collector_db_up.load() == 1;
}

struct OpsServer::Impl {
  Impl(const Config &c, std::function<bool(std::string &)> h) : cfg(c), health(std::move(h)) {}
  const Config &cfg;
  std::function<bool(std::string &)> health;
  httplib::Server srv;
  std::thread thread;
};

OpsServer::OpsServer(const Config &cfg, std::function<bool(std::string &)> health)
    : impl_(std::make_unique<Impl>(cfg, std::move(health))) {}
OpsServer::~OpsServer() { stop(); }

bool OpsServer::start(std::string &error) {
  Impl &m = *impl_;
  m.srv.new_task_queue = [] { return new httplib::ThreadPool(2); };
  m.srv.set_tcp_nodelay(true);
  m.srv.Get("/healthz", [&m](const httplib::Request &, httplib::Response &res) {
    std::string why;
    bool ok = m.health(why);
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok\n" : why + "\n", "text/plain");
  });
  m.srv.Get("/metrics", [](const httplib::Request &, httplib::Response &res) {
    res.set_content(metrics().render(), "text/plain; version=0.0.4");
  });
  std::string host;
  int port = 0;
  split_listen(m.cfg.metrics_listen, host, port);
  if (!m.srv.bind_to_port(host.c_str(), port)) {
    error = "cannot listen on " + m.cfg.metrics_listen + " (metrics.listen)";
    return false;
  }
  m.thread = std::thread([&m] { m.srv.listen_after_bind(); });
  return true;
}

void OpsServer::stop() {
  if (!impl_) return;
  impl_->srv.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace agent
