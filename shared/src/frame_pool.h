// Internal: reusable buffers for sealed outgoing frames. Sealing writes every byte of a
// frame; a fresh multi-MiB malloc per message would be page-faulted in (and zeroed by the
// kernel) each time. Buffers return here when ZeroMQ has sent the frame (from its I/O
// thread), so the pool is thread-safe and process-wide (never destroyed: ZeroMQ may free
// a frame after every channel is gone).
#pragma once

#include <zmq.hpp>

#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace cutlayer::transport::detail {

class FramePool {
 public:
  static FramePool& instance() {
    static FramePool* pool = new FramePool();  // intentionally leaked, see above
    return *pool;
  }

  // A frame of `n` bytes whose storage comes from the pool (or a new buffer).
  zmq::message_t make(std::size_t n) {
    if (n < kMinPooled) return zmq::message_t(n);
    Header* h = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (std::size_t i = 0; i < free_.size(); ++i) {
        if (free_[i]->capacity >= n && free_[i]->capacity <= 2 * n) {
          h = free_[i];
          free_[i] = free_.back();
          free_.pop_back();
          pooled_bytes_ -= h->capacity;
          break;
        }
      }
    }
    if (h == nullptr) {
      void* mem = nullptr;
      if (posix_memalign(&mem, kAlign, kAlign + n) != 0) throw std::bad_alloc();
      h = new (mem) Header{this, n};
    }
    return zmq::message_t(reinterpret_cast<char*>(h) + kAlign, n, &FramePool::release_fn, h);
  }

 private:
  struct Header {
    FramePool* pool;
    std::size_t capacity;
  };
  static constexpr std::size_t kAlign = 64;
  static constexpr std::size_t kMinPooled = 256 * 1024;       // small frames: plain malloc
  static constexpr std::size_t kMaxPooledBytes = 256u << 20;  // keep at most this much idle

  static void release_fn(void*, void* hint) {
    auto* h = static_cast<Header*>(hint);
    h->pool->release(h);
  }
  void release(Header* h) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pooled_bytes_ + h->capacity <= kMaxPooledBytes) {
        free_.push_back(h);
        pooled_bytes_ += h->capacity;
        return;
      }
    }
    std::free(h);
  }

  std::mutex mu_;
  std::vector<Header*> free_;
  std::size_t pooled_bytes_ = 0;
};

}  // namespace cutlayer::transport::detail
