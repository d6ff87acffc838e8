// The agent's configuration: one file of `key = value` lines ([section] headers prefix the keys
// that follow with "section."), every key overridable by the environment variable
// NPS_AGENT_<SECTION>_<KEY> (upper case, dots as underscores), e.g. NPS_AGENT_EMAIL_PASSWORD.
// Unknown keys are errors (a typo must not silently fall back to a default).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace agent {

struct ChannelConfig {
  std::string name;         // email / sms / in_app
  std::string url;          // smtp://, smtps:// or http(s):// webhook URL; empty: not configured
  std::string auth_header;  // webhooks: e.g. "Authorization: Bearer ..."
  int concurrency = 4;      // parallel connections
  double rate = 0;          // messages per second, 0 = unlimited
  int timeout = 30;         // seconds per message
};

struct Config {
  std::map<std::string, std::string> values;  // every known key, after file and environment
  std::string file;

  // typed views, filled by load()
  std::string sender_conninfo, collector_conninfo, worker, mode;
  int batch = 100, poll_interval = 30, retry_after = 60, retry_max = 21600;
  std::string lease, fallback_recipient, link_base_url;
  ChannelConfig email, sms, in_app;
  std::string email_tls, email_user, email_password, email_from, email_from_name, email_ca_file,
      email_message_id_domain, email_unsubscribe_mailto;
  std::string answer_listen, answer_public_origin, answer_secret, answer_default_locale;
  int answer_threads = 16, answer_db_connections = 4, answer_rate_per_ip = 120;
  bool answer_trust_proxy = false;
  std::string metrics_listen, log_level;

  bool sends() const { return mode == "send" || mode == "both"; }
  bool answers() const { return mode == "answer" || mode == "both"; }
};

// Reads the file (when path is not empty), applies the environment, checks every value.
// Returns false and fills errors on any problem.
bool load_config(const std::string &path, Config &cfg, std::vector<std::string> &errors);

// The documented keys with their defaults, in file order (for --help and the example file).
const std::vector<std::pair<std::string, std::string>> &config_keys();

// "host:port" -> host, port; false when malformed.
bool split_listen(const std::string &listen, std::string &host, int &port);

}  // namespace agent
