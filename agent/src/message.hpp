// A claimed survey with the message to send. With claim_messages() (the extension renders the
// message from its templates) every field comes from the database; with claim_surveys() alone
// (older extension) the agent renders a plain built-in English message (fallback_render).
#pragma once
#include <string>

namespace agent {

struct Config;

struct Message {
  long long id = 0;
  std::string token, customer_id, channel, recipient, locale, subject, body_text, body_html;
  int attempts = 1;
  bool has_recipient = false;
};

// The built-in message (links under cfg.link_base_url, recipient from cfg.fallback_recipient).
void fallback_render(const Config &cfg, Message &m);

// <nps.<first 32 hex digits of SHA-256("nps_billing:" token)>@domain>: the same survey always gets
// the same Message-ID, so a re-delivery after a crash is recognisable (and de-duplicated by
// receivers that do so), while the token itself is not exposed.
std::string message_id(const std::string &token, const std::string &domain);

std::string answer_link(const std::string &base, const std::string &token, int score);
std::string unsubscribe_link(const std::string &base, const std::string &token);

// helpers shared with the answer page
std::string html_escape(const std::string &s);
std::string sha256_hex(const std::string &s);
std::string random_urlsafe(int bytes);  // base64url of bytes random bytes (OpenSSL RAND_bytes)
std::string base64url(const unsigned char *data, size_t n);
bool valid_token(const std::string &s);  // 8..128 characters of [A-Za-z0-9_-]

}  // namespace agent
