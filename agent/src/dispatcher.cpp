#include "dispatcher.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "log.hpp"
#include "metrics.hpp"

namespace agent {

Dispatcher::Dispatcher(const Config &cfg, std::atomic<bool> &stop) : cfg_(cfg), stop_(stop) {
  channels_[0].cfg = &cfg.email;
  channels_[1].cfg = &cfg.sms;
  channels_[2].cfg = &cfg.in_app;
}

bool Dispatcher::start(std::string &error) {
  if (pipe(pipe_) != 0) {
    error = "dispatcher: pipe failed";
    return false;
  }
  for (int fd : pipe_) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (auto &ch : channels_) {
    if (ch.cfg->url.empty()) continue;
    ch.limit = std::make_unique<RateLimit>(ch.cfg->rate);
    for (int i = 0; i < ch.cfg->concurrency; i++) ch.threads.emplace_back([this, &ch] { worker(ch); });
  }
  return true;
}

Dispatcher::~Dispatcher() {
  {
    std::lock_guard<std::mutex> g(m_);
    shutdown_ = true;
  }
  work_cv_.notify_all();
  for (auto &ch : channels_)
    for (auto &t : ch.threads) t.join();
  for (int fd : pipe_)
    if (fd >= 0) close(fd);
}

void Dispatcher::signal() {
  char c = 1;
  if (write(pipe_[1], &c, 1) < 0) { /* full: already readable */ }
}

void Dispatcher::finish(Batch *b, size_t n) {
  b->outstanding -= n;
  if (b->outstanding > 0) return;
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() == b) {
      done_.splice(done_.end(), running_, it);
      break;
    }
  }
  signal();
}

void Dispatcher::submit(std::unique_ptr<Batch> batch) {
  Batch *b = batch.get();
  b->out.assign(b->msgs.size(), Outcome());
  b->outstanding = b->msgs.size();
  std::lock_guard<std::mutex> g(m_);
  running_.push_back(std::move(batch));
  size_t immediate = 0;
  for (size_t i = 0; i < b->msgs.size(); i++) {
    int c = channel_index(b->msgs[i].channel);
    if (c < 0 || channels_[c].threads.empty()) {
      b->out[i].state = Outcome::failed;
      b->out[i].error = "channel " + (c < 0 ? std::string("unknown") : b->msgs[i].channel) +
                        " is not configured in the agent";
      immediate++;
      continue;
    }
    if (stop_) {
      b->out[i].state = Outcome::released;
      immediate++;
      continue;
    }
    channels_[c].queue.push_back(Job{b, i});
    waiting_++;
    metrics().queue_depth++;
  }
  if (immediate) finish(b, immediate);
  work_cv_.notify_all();
}

std::vector<std::unique_ptr<Batch>> Dispatcher::take_done() {
  char buf[64];
  while (read(pipe_[0], buf, sizeof buf) > 0) {}
  std::vector<std::unique_ptr<Batch>> out;
  std::lock_guard<std::mutex> g(m_);
  for (auto &b : done_) out.push_back(std::move(b));
  done_.clear();
  return out;
}

size_t Dispatcher::batches() {
  std::lock_guard<std::mutex> g(m_);
  return running_.size() + done_.size();
}

size_t Dispatcher::waiting() {
  std::lock_guard<std::mutex> g(m_);
  return waiting_;
}

void Dispatcher::wake() {
  std::lock_guard<std::mutex> g(m_);
  // Not yet started: given back unsent (their leases are released by the sender).
  for (auto &ch : channels_) {
    for (auto &j : ch.queue) {
      j.batch->out[j.i].state = Outcome::released;
      waiting_--;
      metrics().queue_depth--;
      finish(j.batch, 1);
    }
    ch.queue.clear();
  }
  work_cv_.notify_all();
  signal();
}

void Dispatcher::worker(Channel &ch) {
  std::unique_ptr<Transport> t = make_transport(cfg_, *ch.cfg);
  int ci = channel_index(ch.cfg->name);
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(m_);
      work_cv_.wait(lk, [&] { return shutdown_ || !ch.queue.empty(); });
      if (ch.queue.empty()) return;  // shutdown
      job = ch.queue.front();
      ch.queue.pop_front();
      metrics().queue_depth--;
      if (--waiting_ == low_water_) signal();
    }
    const Message &msg = job.batch->msgs[job.i];
    Outcome o;
    if (!ch.limit->acquire(stop_)) {
      o.state = Outcome::released;
    } else {
      auto t0 = std::chrono::steady_clock::now();
      o = t->send(msg);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      metrics().send_seconds[ci].observe(secs);
      if (o.state == Outcome::sent) metrics().sent[ci]++;
      else metrics().failed[ci]++;
      if (o.state == Outcome::failed) log_debug(ch.cfg->name + " delivery failed: " + o.error);
    }
    std::lock_guard<std::mutex> g(m_);
    job.batch->out[job.i] = std::move(o);
    finish(job.batch, 1);
  }
}

}  // namespace agent
