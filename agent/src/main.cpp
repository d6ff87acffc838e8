// nps-billing-agent: delivers nps_billing's surveys (email over SMTP, sms and in_app through
// webhooks) and serves the page where customers answer. See docs/agent.md.
//
//   nps-billing-agent [--config FILE] [--check] [--version] [--help]
#include <curl/curl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "answer.hpp"
#include "config.hpp"
#include "log.hpp"
#include "sender.hpp"

using namespace agent;

namespace {

const char *kVersion = "nps-billing-agent 0.2";

void usage() {
  std::cout << "usage: nps-billing-agent [--config FILE] [--check] [--version]\n"
               "  --config FILE  configuration file (default: $NPS_AGENT_CONFIG, else none: defaults and\n"
               "                 NPS_AGENT_<SECTION>_<KEY> environment variables only)\n"
               "  --check        validate the configuration, connect to the database as the sender and\n"
               "                 the collector, then exit (0 = ready)\n"
               "keys (section.key = default):\n";
  for (const auto &kv : config_keys()) std::cout << "  " << kv.first << " = " << kv.second << "\n";
}

}  // namespace

int main(int argc, char **argv) {
  std::string config_path;
  if (const char *e = std::getenv("NPS_AGENT_CONFIG")) config_path = e;
  bool check = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) config_path = argv[++i];
    else if (a.rfind("--config=", 0) == 0) config_path = a.substr(9);
    else if (a == "--check") check = true;
    else if (a == "--version") { std::cout << kVersion << "\n"; return 0; }
    else if (a == "--help" || a == "-h") { usage(); return 0; }
    else { std::cerr << "nps-billing-agent: unknown argument " << a << " (--help)\n"; return 2; }
  }
  Config cfg;
  std::vector<std::string> errors;
  if (!load_config(config_path, cfg, errors)) {
    for (const auto &e : errors) std::cerr << "nps-billing-agent: configuration: " << e << "\n";
    return 2;
  }
  log_init(cfg.log_level);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  signal(SIGPIPE, SIG_IGN);

  int stop_pipe[2];
  if (pipe(stop_pipe) != 0) { log_error("pipe failed"); return 1; }
  std::atomic<bool> stop{false};

  if (check) {
    bool ok = true;
    std::string info;
    if (cfg.sends()) {
      Sender s(cfg, stop, stop_pipe[0]);
      if (s.check(info)) std::cout << "sender: ok (" << info << ")\n";
      else { std::cout << "sender: cannot connect or prepare (see above)\n"; ok = false; }
    }
    if (cfg.answers()) {
      AnswerServer a(cfg, stop);
      if (a.check(info)) std::cout << "collector: ok\n";
      else { std::cout << "collector: " << (info.empty() ? "cannot connect (see above)" : info) << "\n"; ok = false; }
    }
    std::cout << (ok ? "configuration and connections ok\n" : "check failed\n");
    return ok ? 0 : 1;
  }

  // Signals go to one thread (sigwait): SIGTERM / SIGINT stop, in every other thread blocked.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  std::unique_ptr<Sender> sender;
  std::unique_ptr<AnswerServer> answer;
  std::unique_ptr<OpsServer> ops;
  std::string err;
  if (cfg.answers()) {
    answer = std::make_unique<AnswerServer>(cfg, stop);
    if (!answer->start(err)) { log_error(err); return 1; }
  }
  if (cfg.sends()) sender = std::make_unique<Sender>(cfg, stop, stop_pipe[0]);
  if (!cfg.metrics_listen.empty()) {
    Sender *sp = sender.get();
    AnswerServer *ap = answer.get();
    ops = std::make_unique<OpsServer>(cfg, [sp, ap](std::string &why) {
      bool ok = true;
      if (sp && !sp->healthy()) { why += "sender database connection down; "; ok = false; }
      if (ap && !ap->healthy()) { why += "collector database connection down; "; ok = false; }
      return ok;
    });
    if (!ops->start(err)) { log_error(err); return 1; }
    log_info("metrics: /healthz and /metrics on " + cfg.metrics_listen);
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    log_info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
             ": finishing messages in progress, releasing the rest");
    stop = true;
    if (write(stop_pipe[1], "x", 1) < 0) { /* the flag alone still stops the loops */ }
    if (sender) sender->wake();
  });
  log_info(std::string(kVersion) + " started: worker " + cfg.worker + ", mode " + cfg.mode);
  if (sender) {
    sender->run();
  } else {
    char c;
    while (read(stop_pipe[0], &c, 1) < 0 && errno == EINTR) {}
  }
  if (answer) answer->stop();
  if (ops) ops->stop();
  signals.join();
  log_info("stopped");
  curl_global_cleanup();
  return 0;
}
