// The answer page's HTML, localised: built-in strings per language (en, de, fr, es, it, nl, pt),
// chosen by the survey's locale (exact, then language, then answer.default_locale, then en).
#pragma once
#include <string>

namespace agent {

struct Strings {
  const char *lang, *title, *question, *low, *high, *comment_label, *send, *saved, *thanks, *thanks_more,
      *closed, *invalid, *answered_before, *unsub_title, *unsub_question, *unsub_button, *unsub_done, *busy,
      *too_many, *bad_request, *comment_too_long, *noscript;
};

const Strings &strings_for(std::string locale, std::string fallback);

struct PageOptions {
  std::string nonce;  // CSP nonce of the inline script and style
  std::string csrf;   // the form's CSRF value (also in the cookie)
};

// The score page: the chosen score preselected, a comment box, and a script that records the
// score once the page is shown by a browser (auto_post: a link scanner's bare GET records nothing).
std::string score_page(const Strings &s, int score, bool auto_post, bool answered_before, const PageOptions &o);
std::string message_page(const Strings &s, const std::string &title, const std::string &text, const PageOptions &o);
std::string unsubscribe_page(const Strings &s, const PageOptions &o);

}  // namespace agent
