#include "channels.hpp"

#include <curl/curl.h>

#include <chrono>
#include <ctime>
#include <thread>
#include <nlohmann/json.hpp>

#include "log.hpp"
#include "metrics.hpp"

namespace agent {

namespace {

std::string b64(const std::string &s) {
  static const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  size_t i = 0;
  auto d = reinterpret_cast<const unsigned char *>(s.data());
  for (; i + 2 < s.size(); i += 3) {
    unsigned v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    o += a[v >> 18]; o += a[(v >> 12) & 63]; o += a[(v >> 6) & 63]; o += a[v & 63];
  }
  if (s.size() - i == 1) {
    unsigned v = d[i] << 16;
    o += a[v >> 18]; o += a[(v >> 12) & 63]; o += "==";
  } else if (s.size() - i == 2) {
    unsigned v = (d[i] << 16) | (d[i + 1] << 8);
    o += a[v >> 18]; o += a[(v >> 12) & 63]; o += a[(v >> 6) & 63]; o += '=';
  }
  return o;
}

bool ascii_printable(const std::string &s) {
  for (unsigned char c : s) if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// RFC 2047 encoded words (UTF-8, base64), split on character boundaries, for non-ASCII headers.
std::string encode_header(const std::string &s) {
  if (ascii_printable(s) && s.size() < 900) return s;
  std::string out, chunk;
  auto flush = [&] {
    if (chunk.empty()) return;
    if (!out.empty()) out += "\r\n ";
    out += "=?UTF-8?B?" + b64(chunk) + "?=";
    chunk.clear();
  };
  for (size_t i = 0; i < s.size(); i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r' || c == '\n') continue;
    bool continuation = (c & 0xC0) == 0x80;
    if (!continuation && chunk.size() >= 42) flush();
    chunk += s[i];
  }
  flush();
  return out;
}

std::string crlf(const std::string &s) {  // bare LF -> CRLF, for the QP encoder's hard breaks
  std::string o;
  o.reserve(s.size() + s.size() / 40);
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) o += '\r';
    o += s[i];
  }
  return o;
}

bool plausible_address(const std::string &a) {
  auto at = a.find('@');
  return !a.empty() && a.size() <= 254 && at != std::string::npos && at > 0 && at + 1 < a.size() &&
         a.find_first_of("<>\r\n ,;\"()") == std::string::npos && ascii_printable(a);
}

// The unsubscribe URL the rendered text carries (…/u/<token>), for List-Unsubscribe.
std::string find_unsubscribe_url(const Message &m, const std::string &fallback_base) {
  std::string needle = "/u/" + m.token;
  auto p = m.body_text.find(needle);
  if (p != std::string::npos) {
    auto b = m.body_text.rfind("http", p);
    if (b != std::string::npos) {
      std::string url = m.body_text.substr(b, p + needle.size() - b);
      if (url.find_first_of(" \r\n\t<>\"") == std::string::npos) return url;
    }
  }
  return unsubscribe_link(fallback_base, m.token);
}

std::string curl_error(const char *what, CURL *h, CURLcode rc) {
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  std::string e = std::string(what) + ": " + curl_easy_strerror(rc);
  if (code) e += " (reply " + std::to_string(code) + ")";
  return e;
}

class Smtp : public Transport {
 public:
  Smtp(const Config &cfg, const ChannelConfig &ch) : cfg_(cfg), ch_(ch), h_(curl_easy_init()) {}
  ~Smtp() override { if (h_) curl_easy_cleanup(h_); }

  Outcome send(const Message &m) override {
    Outcome o;
    o.state = Outcome::failed;
    if (!h_) { o.error = "email: curl_easy_init failed"; return o; }
    if (!plausible_address(m.recipient)) {
      o.error = m.recipient.empty() ? "email: no recipient" : "email: recipient is not a valid address";
      return o;
    }
    // Keeps the live connection (and TLS session) while clearing the previous message's options.
    curl_easy_reset(h_);
    curl_easy_setopt(h_, CURLOPT_URL, ch_.url.c_str());
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_TIMEOUT, static_cast<long>(ch_.timeout));
    curl_easy_setopt(h_, CURLOPT_CONNECTTIMEOUT, 10L);
    if (ch_.url.rfind("smtp://", 0) == 0)
      curl_easy_setopt(h_, CURLOPT_USE_SSL, cfg_.email_tls == "starttls" ? static_cast<long>(CURLUSESSL_ALL)
                                             : cfg_.email_tls == "try"   ? static_cast<long>(CURLUSESSL_TRY)
                                                                         : static_cast<long>(CURLUSESSL_NONE));
    if (!cfg_.email_ca_file.empty()) curl_easy_setopt(h_, CURLOPT_CAINFO, cfg_.email_ca_file.c_str());
    if (!cfg_.email_user.empty()) {
      curl_easy_setopt(h_, CURLOPT_USERNAME, cfg_.email_user.c_str());
      curl_easy_setopt(h_, CURLOPT_PASSWORD, cfg_.email_password.c_str());
    }
    std::string from = "<" + cfg_.email_from + ">", to = "<" + m.recipient + ">";
    curl_easy_setopt(h_, CURLOPT_MAIL_FROM, from.c_str());
    curl_slist *rcpt = curl_slist_append(nullptr, to.c_str());
    curl_easy_setopt(h_, CURLOPT_MAIL_RCPT, rcpt);

    char date[64];
    std::time_t now = std::time(nullptr);
    std::tm tm;
    gmtime_r(&now, &tm);
    std::strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S +0000", &tm);
    std::string unsub = find_unsubscribe_url(m, cfg_.link_base_url);
    std::string list_unsub = "List-Unsubscribe: <" + unsub + ">";
    if (!cfg_.email_unsubscribe_mailto.empty())
      list_unsub += ", <mailto:" + cfg_.email_unsubscribe_mailto + "?subject=unsubscribe>";
    std::string from_h = "From: " + (cfg_.email_from_name.empty() ? "" : (ascii_printable(cfg_.email_from_name)
                             ? "\"" + cfg_.email_from_name + "\" " : encode_header(cfg_.email_from_name) + " ")) + from;
    std::string headers_text[] = {
        date, from_h, "To: " + to,
        "Subject: " + encode_header(m.subject.empty() ? std::string("How likely are you to recommend us?") : m.subject),
        "Message-ID: " + message_id(m.token, cfg_.email_message_id_domain),
        list_unsub, "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "Auto-Submitted: auto-generated",
    };
    curl_slist *headers = nullptr;
    for (const auto &h : headers_text) headers = curl_slist_append(headers, h.c_str());
    curl_easy_setopt(h_, CURLOPT_HTTPHEADER, headers);

    std::string text = crlf(m.body_text), html = crlf(m.body_html);
    curl_mime *mime = curl_mime_init(h_), *alt = curl_mime_init(h_);
    curl_mimepart *part = curl_mime_addpart(alt);
    curl_mime_data(part, text.data(), text.size());
    curl_mime_type(part, "text/plain; charset=utf-8");
    curl_mime_encoder(part, "quoted-printable");
    if (!html.empty()) {
      part = curl_mime_addpart(alt);
      curl_mime_data(part, html.data(), html.size());
      curl_mime_type(part, "text/html; charset=utf-8");
      curl_mime_encoder(part, "quoted-printable");
    }
    part = curl_mime_addpart(mime);
    curl_mime_subparts(part, alt);
    curl_mime_type(part, "multipart/alternative");
    curl_easy_setopt(h_, CURLOPT_MIMEPOST, mime);

    CURLcode rc = curl_easy_perform(h_);
    if (rc == CURLE_OK) o.state = Outcome::sent;
    else o.error = curl_error("email", h_, rc);
    curl_mime_free(mime);
    curl_slist_free_all(headers);
    curl_slist_free_all(rcpt);
    return o;
  }

 private:
  const Config &cfg_;
  const ChannelConfig &ch_;
  CURL *h_;
};

size_t discard(char *, size_t size, size_t n, void *) { return size * n; }

class Webhook : public Transport {
 public:
  Webhook(const Config &cfg, const ChannelConfig &ch) : cfg_(cfg), ch_(ch), h_(curl_easy_init()) {}
  ~Webhook() override { if (h_) curl_easy_cleanup(h_); }

  Outcome send(const Message &m) override {
    Outcome o;
    o.state = Outcome::failed;
    if (!h_) { o.error = ch_.name + ": curl_easy_init failed"; return o; }
    nlohmann::json j = {
        {"survey_id", m.id},       {"channel", m.channel},        {"customer_id", m.customer_id},
        {"recipient", m.recipient.empty() ? nlohmann::json() : nlohmann::json(m.recipient)},
        {"locale", m.locale},      {"subject", m.subject},        {"text", m.body_text},
        {"token", m.token},        {"attempt", m.attempts},
        {"message_id", message_id(m.token, cfg_.email_message_id_domain)},
    };
    std::string body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    curl_easy_reset(h_);
    curl_easy_setopt(h_, CURLOPT_URL, ch_.url.c_str());
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_TIMEOUT, static_cast<long>(ch_.timeout));
    curl_easy_setopt(h_, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h_, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(h_, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h_, CURLOPT_USERAGENT, "nps-billing-agent");
    std::string idem = "Idempotency-Key: " + sha256_hex("nps_billing:" + m.token).substr(0, 32);
    curl_slist *headers = curl_slist_append(nullptr, "Content-Type: application/json");
    headers = curl_slist_append(headers, idem.c_str());
    if (!ch_.auth_header.empty()) headers = curl_slist_append(headers, ch_.auth_header.c_str());
    curl_easy_setopt(h_, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(h_);
    long code = 0;
    curl_easy_getinfo(h_, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) o.error = curl_error(ch_.name.c_str(), h_, rc);
    else if (code < 200 || code > 299) o.error = ch_.name + ": webhook answered HTTP " + std::to_string(code);
    else o.state = Outcome::sent;
    return o;
  }

 private:
  const Config &cfg_;
  const ChannelConfig &ch_;
  CURL *h_;
};

}  // namespace

std::unique_ptr<Transport> make_transport(const Config &cfg, const ChannelConfig &ch) {
  if (ch.name == "email") return std::make_unique<Smtp>(cfg, ch);
  return std::make_unique<Webhook>(cfg, ch);
}

bool RateLimit::acquire(const std::atomic<bool> &stop) {
  if (rate_ <= 0) return true;
  for (;;) {
    double wait;
    {
      std::lock_guard<std::mutex> g(m_);
      auto now = std::chrono::steady_clock::now();
      double cap = rate_ > 1 ? rate_ : 1;
      tokens_ += std::chrono::duration<double>(now - last_).count() * rate_;
      if (tokens_ > cap) tokens_ = cap;
      last_ = now;
      if (tokens_ >= 1) { tokens_ -= 1; return true; }
      wait = (1 - tokens_) / rate_;
    }
    if (stop) return false;
    std::this_thread::sleep_for(std::chrono::duration<double>(wait < 0.2 ? wait : 0.2));
  }
}

}  // namespace agent
