#include "config.hpp"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace agent {

const std::vector<std::pair<std::string, std::string>> &config_keys() {
  static const std::vector<std::pair<std::string, std::string>> keys = {
      {"database.sender", ""},       // libpq conninfo of the sender role ("" = PG* environment)
      {"database.collector", ""},    // libpq conninfo of the collector role
      {"agent.worker", ""},          // lease owner name ("" = nps-agent-<host>-<pid>)
      {"agent.mode", "both"},        // send | answer | both
      {"send.batch", "100"},
      {"send.lease", "5 minutes"},
      {"send.poll_interval", "30"},  // seconds between claims without a NOTIFY
      {"send.retry_after", "60"},    // seconds before the first retry; doubled per attempt
      {"send.retry_max", "21600"},   // at most this many seconds
      {"send.fallback_recipient", ""},  // "{customer_id}@example.com": recipient without claim_messages
      {"send.link_base_url", "http://127.0.0.1:8080/r"},  // links of the built-in message
      {"email.url", ""},             // smtp://host:587 (STARTTLS) or smtps://host:465 (implicit TLS)
      {"email.tls", "starttls"},     // starttls (required) | try | none (smtp:// only)
      {"email.user", ""},
      {"email.password", ""},
      {"email.from", "surveys@example.com"},
      {"email.from_name", ""},
      {"email.ca_file", ""},
      {"email.message_id_domain", ""},   // "" = the domain of email.from
      {"email.unsubscribe_mailto", ""},  // extra mailto: in List-Unsubscribe
      {"email.concurrency", "4"},
      {"email.rate", "0"},
      {"email.timeout", "30"},
      {"sms.url", ""},
      {"sms.auth_header", ""},
      {"sms.concurrency", "4"},
      {"sms.rate", "0"},
      {"sms.timeout", "10"},
      {"in_app.url", ""},
      {"in_app.auth_header", ""},
      {"in_app.concurrency", "4"},
      {"in_app.rate", "0"},
      {"in_app.timeout", "10"},
      {"answer.listen", "127.0.0.1:8080"},
      {"answer.public_origin", ""},  // https://nps.example.com: Origin check, Secure cookie
      {"answer.secret", ""},         // CSRF key ("" = random at start)
      {"answer.threads", "16"},
      {"answer.db_connections", "4"},
      {"answer.rate_per_ip", "120"},  // requests per minute and address, 0 = no limit
      {"answer.trust_proxy", "false"},
      {"answer.default_locale", "en"},
      {"metrics.listen", "127.0.0.1:9187"},  // /healthz and /metrics ("" = off)
      {"log.level", "info"},
  };
  return keys;
}

namespace {

std::string trim(const std::string &s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) b++;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) e--;
  return s.substr(b, e - b);
}

std::string env_name(const std::string &key) {
  std::string n = "NPS_AGENT_";
  for (char c : key) n += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return n;
}

bool to_int(const std::string &v, int lo, int hi, int &out) {
  if (v.empty() || v.size() > 9) return false;
  for (char c : v) if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  long n = std::strtol(v.c_str(), nullptr, 10);
  if (n < lo || n > hi) return false;
  out = static_cast<int>(n);
  return true;
}

bool to_double(const std::string &v, double &out) {
  char *end = nullptr;
  out = std::strtod(v.c_str(), &end);
  return !v.empty() && end && *end == '\0' && out >= 0 && out < 1e7;
}

}  // namespace

bool split_listen(const std::string &listen, std::string &host, int &port) {
  auto p = listen.rfind(':');
  if (p == std::string::npos || p == 0) return false;
  host = listen.substr(0, p);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return to_int(listen.substr(p + 1), 1, 65535, port);
}

bool load_config(const std::string &path, Config &cfg, std::vector<std::string> &errors) {
  cfg.file = path;
  for (const auto &kv : config_keys()) cfg.values[kv.first] = kv.second;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) {
      errors.push_back("cannot read configuration file " + path);
      return false;
    }
    std::string line, section;
    int lineno = 0;
    while (std::getline(in, line)) {
      lineno++;
      std::string t = trim(line);
      if (t.empty() || t[0] == '#' || t[0] == ';') continue;
      if (t.front() == '[' && t.back() == ']') {
        section = trim(t.substr(1, t.size() - 2));
        continue;
      }
      auto eq = t.find('=');
      if (eq == std::string::npos) {
        errors.push_back(path + ":" + std::to_string(lineno) + ": expected key = value");
        continue;
      }
      std::string key = trim(t.substr(0, eq)), value = trim(t.substr(eq + 1));
      if (!section.empty()) key = section + "." + key;
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      if (!cfg.values.count(key)) {
        errors.push_back(path + ":" + std::to_string(lineno) + ": unknown key " + key);
        continue;
      }
      cfg.values[key] = value;
    }
  }
  for (const auto &kv : config_keys()) {
    const char *e = std::getenv(env_name(kv.first).c_str());
    if (e) cfg.values[kv.first] = e;
  }
  auto &v = cfg.values;
  auto num = [&](const std::string &key, int lo, int hi, int &out) {
    if (!to_int(v[key], lo, hi, out))
      errors.push_back(key + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  };
  cfg.sender_conninfo = v["database.sender"];
  cfg.collector_conninfo = v["database.collector"];
  cfg.worker = v["agent.worker"];
  if (cfg.worker.empty()) {
    char host[256] = "host";
    gethostname(host, sizeof host - 1);
    cfg.worker = std::string("nps-agent-") + host + "-" + std::to_string(getpid());
  }
  if (cfg.worker.size() > 200) errors.push_back("agent.worker must have at most 200 characters");
  cfg.mode = v["agent.mode"];
  if (cfg.mode != "send" && cfg.mode != "answer" && cfg.mode != "both")
    errors.push_back("agent.mode must be send, answer or both");
  num("send.batch", 1, 10000, cfg.batch);
  num("send.poll_interval", 1, 86400, cfg.poll_interval);
  num("send.retry_after", 0, 31536000, cfg.retry_after);
  num("send.retry_max", 0, 31536000, cfg.retry_max);
  cfg.lease = v["send.lease"];
  cfg.fallback_recipient = v["send.fallback_recipient"];
  cfg.link_base_url = v["send.link_base_url"];
  while (!cfg.link_base_url.empty() && cfg.link_base_url.back() == '/') cfg.link_base_url.pop_back();
  for (ChannelConfig *c : {&cfg.email, &cfg.sms, &cfg.in_app}) {
    c->name = c == &cfg.email ? "email" : c == &cfg.sms ? "sms" : "in_app";
    c->url = v[c->name + ".url"];
    if (c != &cfg.email) c->auth_header = v[c->name + ".auth_header"];
    num(c->name + ".concurrency", 1, 256, c->concurrency);
    num(c->name + ".timeout", 1, 3600, c->timeout);
    if (!to_double(v[c->name + ".rate"], c->rate)) errors.push_back(c->name + ".rate must be a number >= 0");
    const std::string &u = c->url;
    if (!u.empty()) {
      bool ok = c == &cfg.email ? (u.rfind("smtp://", 0) == 0 || u.rfind("smtps://", 0) == 0)
                                : (u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0);
      if (!ok) errors.push_back(c->name + ".url must start with " +
                                (c == &cfg.email ? "smtp:// or smtps://" : "http:// or https://"));
    }
    if (!c->auth_header.empty() && c->auth_header.find(':') == std::string::npos)
      errors.push_back(c->name + ".auth_header must be a header line, e.g. \"Authorization: Bearer ...\"");
  }
  cfg.email_tls = v["email.tls"];
  if (cfg.email_tls != "starttls" && cfg.email_tls != "try" && cfg.email_tls != "none")
    errors.push_back("email.tls must be starttls, try or none");
  cfg.email_user = v["email.user"];
  cfg.email_password = v["email.password"];
  cfg.email_from = v["email.from"];
  cfg.email_from_name = v["email.from_name"];
  cfg.email_ca_file = v["email.ca_file"];
  cfg.email_unsubscribe_mailto = v["email.unsubscribe_mailto"];
  auto at = cfg.email_from.find('@');
  if (at == std::string::npos || at == 0 || at + 1 >= cfg.email_from.size() ||
      cfg.email_from.find_first_of("<>\r\n \"") != std::string::npos)
    errors.push_back("email.from must be a plain address like surveys@example.com");
  cfg.email_message_id_domain = v["email.message_id_domain"];
  if (cfg.email_message_id_domain.empty() && at != std::string::npos) cfg.email_message_id_domain = cfg.email_from.substr(at + 1);
  if (cfg.email_from_name.find_first_of("\r\n") != std::string::npos) errors.push_back("email.from_name must be one line");
  cfg.answer_listen = v["answer.listen"];
  cfg.answer_public_origin = v["answer.public_origin"];
  while (!cfg.answer_public_origin.empty() && cfg.answer_public_origin.back() == '/') cfg.answer_public_origin.pop_back();
  cfg.answer_secret = v["answer.secret"];
  if (!cfg.answer_secret.empty() && cfg.answer_secret.size() < 16) errors.push_back("answer.secret must have at least 16 characters");
  num("answer.threads", 1, 1024, cfg.answer_threads);
  num("answer.db_connections", 1, 256, cfg.answer_db_connections);
  num("answer.rate_per_ip", 0, 1000000, cfg.answer_rate_per_ip);
  cfg.answer_trust_proxy = v["answer.trust_proxy"] == "true" || v["answer.trust_proxy"] == "yes" || v["answer.trust_proxy"] == "1";
  cfg.answer_default_locale = v["answer.default_locale"];
  cfg.metrics_listen = v["metrics.listen"];
  std::string h;
  int p;
  if (cfg.answers() && !split_listen(cfg.answer_listen, h, p)) errors.push_back("answer.listen must be host:port");
  if (!cfg.metrics_listen.empty() && !split_listen(cfg.metrics_listen, h, p)) errors.push_back("metrics.listen must be host:port or empty");
  cfg.log_level = v["log.level"];
  if (cfg.log_level != "error" && cfg.log_level != "warning" && cfg.log_level != "info" && cfg.log_level != "debug")
    errors.push_back("log.level must be error, warning, info or debug");
  if (cfg.sends() && cfg.email.url.empty() && cfg.sms.url.empty() && cfg.in_app.url.empty())
    errors.push_back("agent.mode sends, but no channel is configured (email.url, sms.url or in_app.url)");
  return errors.empty();
}

}  // namespace agent
