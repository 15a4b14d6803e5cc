// A CPU emulation of the CUDA built-ins that the gaussiank kernels use, so that their device
// code (kernels/src/cuda/gaussiank_kernels.cuh) runs in the CPU tests on any machine: each
// CUDA thread is a fiber (ucontext), a block's threads take turns on one OS thread, and
// __syncthreads and the warp collectives (__shfl*_sync, __ballot_sync, __any_sync) wait
// until every thread of the block or warp has arrived. Blocks run one after another.
// Atomics are plain read-modify-writes (one OS thread: nothing interleaves inside them).
// For testing the kernels' logic: it says nothing about speed or the memory model.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline EmuDim3 threadIdx, blockIdx, blockDim, gridDim;

struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
using std::isfinite;

namespace cuda_emu {

struct Scheduler {
  int threads = 0;
  int current = 0;
  std::vector<ucontext_t> ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> done;
  ucontext_t main{};
  const std::function<void()>* body = nullptr;
  // Barriers: arrivals and a generation that advances when the last one arrives.
  int block_arrived = 0;
  unsigned block_generation = 0;
  std::vector<int> warp_arrived;
  std::vector<unsigned> warp_generation;
  std::vector<std::uint64_t> lanes;  // one exchange slot per thread
};
inline Scheduler S;

inline void yield() { swapcontext(&S.ctx[S.current], &S.main); }

inline void block_barrier() {
  const unsigned gen = S.block_generation;
  if (++S.block_arrived == S.threads) {
    S.block_arrived = 0;
    ++S.block_generation;
    return;
  }
  while (S.block_generation == gen) yield();
}

inline void warp_barrier() {
  const int w = static_cast<int>(threadIdx.x / 32);
  const unsigned gen = S.warp_generation[w];
  if (++S.warp_arrived[w] == 32) {
    S.warp_arrived[w] = 0;
    ++S.warp_generation[w];
    return;
  }
  while (S.warp_generation[w] == gen) yield();
}

// Every lane posts `v`; returns what lane `src` posted (a lane outside the warp: its own).
template <class T>
T exchange(T v, int src) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  const int self = static_cast<int>(threadIdx.x);
  const int warp0 = self & ~31;
  std::uint64_t raw = 0;
  std::memcpy(&raw, &v, sizeof(T));
  S.lanes[self] = raw;
  warp_barrier();
  T out = v;
  if (src >= 0 && src < 32) std::memcpy(&out, &S.lanes[warp0 + src], sizeof(T));
  warp_barrier();  // no lane posts again before every lane has read
  return out;
}

inline void entry(int i) {
  (*S.body)();
  S.done[i] = 1;
}

// Runs body() as grid x block threads (1-D), block after block.
inline void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (block % 32 != 0) throw std::logic_error("cuda_emu: the block must be whole warps");
  constexpr std::size_t kStack = 64 * 1024;
  S.threads = static_cast<int>(block);
  S.body = &body;
  S.ctx.assign(block, ucontext_t{});
  S.stacks.resize(block);
  for (auto& s : S.stacks)
    if (!s) s.reset(new char[kStack]);
  S.lanes.assign(block, 0);
  blockDim.x = block;
  gridDim.x = grid;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    S.done.assign(block, 0);
    S.block_arrived = 0;
    S.warp_arrived.assign(block / 32, 0);
    S.warp_generation.assign(block / 32, 0);
    for (unsigned t = 0; t < block; ++t) {
      getcontext(&S.ctx[t]);
      S.ctx[t].uc_stack.ss_sp = S.stacks[t].get();
      S.ctx[t].uc_stack.ss_size = kStack;
      S.ctx[t].uc_link = &S.main;
      makecontext(&S.ctx[t], reinterpret_cast<void (*)()>(&entry), 1, static_cast<int>(t));
    }
    for (bool running = true; running;) {
      running = false;
      for (unsigned t = 0; t < block; ++t) {
        if (S.done[t]) continue;
        running = true;
        S.current = static_cast<int>(t);
        threadIdx.x = t;
        swapcontext(&S.main, &S.ctx[t]);
      }
    }
  }
}

}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::block_barrier(); }

template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return cuda_emu::exchange(v, src);
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned d) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int src = lane - static_cast<int>(d);
  return cuda_emu::exchange(v, src < 0 ? lane : src);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned d) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int src = lane + static_cast<int>(d);
  return cuda_emu::exchange(v, src > 31 ? lane : src);
}
inline unsigned __ballot_sync(unsigned, int pred) {
  const int self = static_cast<int>(threadIdx.x);
  const int warp0 = self & ~31;
  cuda_emu::S.lanes[self] = pred != 0;
  cuda_emu::warp_barrier();
  unsigned mask = 0;
  for (int l = 0; l < 32; ++l) mask |= (cuda_emu::S.lanes[warp0 + l] != 0 ? 1u : 0u) << l;
  cuda_emu::warp_barrier();
  return mask;
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }

template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old | v;
  return old;
}
