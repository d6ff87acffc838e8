// Hands claimed batches to the channels' worker threads: each channel has `concurrency` workers,
// each with its own transport (one reused connection) behind the channel's rate limit. submit()
// returns at once, so the sender claims the next batch and reports the previous one while this
// one is being sent; a batch comes back from take_done() when every message in it is sent,
// failed or (on stop) released unsent, and done_fd() becomes readable then, and also when the
// messages waiting for a worker fall to the low-water mark (time to claim the next batch).
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "channels.hpp"
#include "config.hpp"
#include "message.hpp"

namespace agent {

struct Batch {
  std::vector<Message> msgs;
  std::vector<Outcome> out;  // out[i]: msgs[i]'s outcome, final once the batch is done
  size_t outstanding = 0;    // messages not yet done (the dispatcher's lock)
};

class Dispatcher {
 public:
  Dispatcher(const Config &cfg, std::atomic<bool> &stop);
  ~Dispatcher();
  bool start(std::string &error);
  void submit(std::unique_ptr<Batch> batch);
  std::vector<std::unique_ptr<Batch>> take_done();  // finished batches, in the order they finished
  size_t batches();  // submitted and not yet taken back by take_done()
  size_t waiting();  // messages not yet taken by a worker
  void set_low_water(size_t n) { low_water_ = n; }
  int done_fd() const { return pipe_[0]; }
  void wake();  // stop requested: idle workers return, queued messages are released

 private:
  struct Job {
    Batch *batch;
    size_t i;
  };
  struct Channel {
    const ChannelConfig *cfg;
    std::deque<Job> queue;
    std::unique_ptr<RateLimit> limit;
    std::vector<std::thread> threads;
  };
  void worker(Channel &ch);
  void finish(Batch *b, size_t n);  // with the lock held: n messages of b are done
  void signal();

  const Config &cfg_;
  std::atomic<bool> &stop_;
  Channel channels_[3];
  std::mutex m_;
  std::condition_variable work_cv_;
  std::list<std::unique_ptr<Batch>> running_, done_;
  size_t waiting_ = 0, low_water_ = 0;
  bool shutdown_ = false;
  int pipe_[2] = {-1, -1};
};

}  // namespace agent
