// The sending loop: LISTEN nps_billing_survey (plus a polling fallback), claim a batch, hand it to
// the channels, report it back with one mark_sent(ids[]) and one mark_failed(ids[]) per distinct
// (error, retry delay); retries back off exponentially with the attempt number. At most two
// batches are out at once: the next one is claimed while the workers still have half a batch
// to send, and a finished batch is reported while the next one is being sent, so the channels'
// workers do not wait for the database. Reports that
// cannot reach the database are kept and sent again after reconnecting (the message went out:
// recording it prevents a second send). On stop, messages not yet started are released
// (mark_failed with retry_after 0), so another agent can take them at once.
#pragma once
#include <atomic>
#include <string>
#include <vector>

#include "channels.hpp"
#include "dispatcher.hpp"
#include "config.hpp"
#include "db.hpp"

namespace agent {

class Sender {
 public:
  Sender(const Config &cfg, std::atomic<bool> &stop, int stop_fd);
  void run();                     // until stop
  bool check(std::string &info);  // --check: connect, probe the functions, roll nothing
  bool healthy() const;  // from any thread
  void wake() { dispatcher_.wake(); }

 private:
  struct Report {
    bool sent;
    std::vector<long long> ids;
    std::string error;
    int retry_seconds = 0;
  };
  bool connect();
  bool claim(std::vector<Message> &batch);
  enum class Woken { timeout, notified, dispatcher, stop, connection };
  Woken wait(int milliseconds);
  void collect();  // finished batches -> reports
  void queue_reports(const std::vector<Message> &batch, const std::vector<Outcome> &out);
  bool flush_reports();
  void sleep_interruptible(int seconds);

  const Config &cfg_;
  std::atomic<bool> &stop_;
  int stop_fd_;
  Db db_;
  Dispatcher dispatcher_;
  bool rendered_ = false;  // claim_messages() available: the extension renders the messages
  std::vector<Report> reports_;
};

}  // namespace agent
