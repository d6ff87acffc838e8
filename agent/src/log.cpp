#include "log.hpp"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace agent {

namespace {
Level g_level = Level::info;
bool g_journal = false;
std::mutex g_mutex;
}  // namespace

void log_init(const std::string &level) {
  if (level == "error") g_level = Level::error;
  else if (level == "warning") g_level = Level::warning;
  else if (level == "debug") g_level = Level::debug;
  else g_level = Level::info;
  g_journal = std::getenv("JOURNAL_STREAM") != nullptr;
}

bool log_enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(g_level); }

void log(Level l, const std::string &msg) {
  if (!log_enabled(l)) return;
  const char *name = l == Level::error ? "error" : l == Level::warning ? "warning"
                   : l == Level::info ? "info" : "debug";
  std::string line;
  if (g_journal) line = "<" + std::to_string(static_cast<int>(l)) + ">" + msg;
  else line = std::string("nps-billing-agent: ") + name + ": " + msg;
  // One line per event: a message never spans lines in the journal.
  for (char &c : line) if (c == '\n' || c == '\r') c = ' ';
  line += '\n';
  std::lock_guard<std::mutex> g(g_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace agent
