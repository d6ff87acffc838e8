// Journal-friendly logging: one line per event on stderr. Under systemd (JOURNAL_STREAM set) each
// line starts with the sd-daemon priority prefix (<3> error ... <7> debug), which journald reads;
// on a terminal it starts with the level name. Callers never pass tokens, recipients, customer ids
// or comments: messages name survey counts, channels, SQLSTATEs and error classes only.
#pragma once
#include <string>

namespace agent {

enum class Level { error = 3, warning = 4, info = 6, debug = 7 };

void log_init(const std::string &level);  // "error", "warning", "info" or "debug"
bool log_enabled(Level l);
void log(Level l, const std::string &msg);
inline void log_error(const std::string &m) { log(Level::error, m); }
inline void log_warning(const std::string &m) { log(Level::warning, m); }
inline void log_info(const std::string &m) { log(Level::info, m); }
inline void log_debug(const std::string &m) { if (log_enabled(Level::debug)) log(Level::debug, m); }

}  // namespace agent
