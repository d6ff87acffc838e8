#include "message.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "config.hpp"

namespace agent {

std::string html_escape(const std::string &s) {
  std::string o;
  o.reserve(s.size() + 16);
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string sha256_hex(const std::string &s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  static const char *hex = "0123456789abcdef";
  std::string o;
  for (unsigned int i = 0; i < n; i++) {
    o += hex[md[i] >> 4];
    o += hex[md[i] & 15];
  }
  return o;
}

std::string base64url(const unsigned char *d, size_t n) {
  static const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string o;
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    unsigned v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    o += a[v >> 18];
    o += a[(v >> 12) & 63];
    o += a[(v >> 6) & 63];
    o += a[v & 63];
  }
  if (n - i == 1) {
    unsigned v = d[i] << 16;
    o += a[v >> 18];
    o += a[(v >> 12) & 63];
  } else if (n - i == 2) {
    unsigned v = (d[i] << 16) | (d[i + 1] << 8);
    o += a[v >> 18];
    o += a[(v >> 12) & 63];
    o += a[(v >> 6) & 63];
  }
  return o;
}

std::string random_urlsafe(int bytes) {
  unsigned char buf[64];
  if (bytes > 64) bytes = 64;
  if (RAND_bytes(buf, bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  return base64url(buf, static_cast<size_t>(bytes));
}

bool valid_token(const std::string &s) {
  if (s.size() < 8 || s.size() > 128) return false;
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return false;
  return true;
}

std::string message_id(const std::string &token, const std::string &domain) {
  return "<nps." + sha256_hex("nps_billing:" + token).substr(0, 32) + "@" + domain + ">";
}

std::string answer_link(const std::string &base, const std::string &token, int score) {
  return base + "/" + token + "/" + std::to_string(score);
}

std::string unsubscribe_link(const std::string &base, const std::string &token) {
  return base + "/u/" + token;
}

void fallback_render(const Config &cfg, Message &m) {
  if (!m.has_recipient) {
    m.recipient.clear();
    if (!cfg.fallback_recipient.empty()) {
      m.recipient = cfg.fallback_recipient;
      auto p = m.recipient.find("{customer_id}");
      if (p != std::string::npos) m.recipient.replace(p, 13, m.customer_id);
    }
  }
  if (m.locale.empty()) m.locale = "en";
  const std::string &b = cfg.link_base_url;
  m.subject = "How likely are you to recommend us?";
  std::string t = "How likely are you to recommend us to a friend or colleague?\r\n"
                  "Pick a score from 0 (not at all likely) to 10 (extremely likely):\r\n\r\n";
  for (int s = 0; s <= 10; s++) t += std::to_string(s) + ": " + answer_link(b, m.token, s) + "\r\n";
  t += "\r\nTo receive no more surveys: " + unsubscribe_link(b, m.token) + "\r\n";
  m.body_text = t;
  std::string h = "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">"
                  "<p>How likely are you to recommend us to a friend or colleague?</p><p>";
  for (int s = 0; s <= 10; s++)
    h += "<a href=\"" + html_escape(answer_link(b, m.token, s)) +
         "\" style=\"display:inline-block;padding:8px 12px;margin:2px;border:1px solid #888;"
         "text-decoration:none\">" + std::to_string(s) + "</a>";
  h += "</p><p style=\"font-size:small\">0 = not at all likely, 10 = extremely likely</p>"
       "<p style=\"font-size:small\"><a href=\"" + html_escape(unsubscribe_link(b, m.token)) +
       "\">Unsubscribe</a></p></body></html>";
  m.body_html = h;
}

}  // namespace agent
