// The scheduler variables live across swapcontext, which saves and restores them.
#pragma GCC diagnostic ignored "-Wclobbered"
#include "kernels/cuda/emu/emu.h"

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

namespace canopy_emu {

uint3 g_thread_idx, g_block_idx;
dim3 g_block_dim, g_grid_dim;

namespace {

constexpr size_t kStackBytes = 256 << 10;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  State state = State::kDone;
  uint3 index;
};

struct LaunchState {
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<uint64_t> exchange;  // one slot per thread
  std::vector<unsigned char> smem;
  ucontext_t scheduler;
  int current = -1;
};

std::mutex g_launch_mutex;  // one launch at a time in the process
LaunchState* g_launch = nullptr;

[[noreturn]] void Fail(const char* what) {
  const uint3 b = g_block_idx, t = g_thread_idx;
  std::fprintf(stderr, "cuda-emu: %s (block %u,%u,%u thread %u,%u,%u)\n", what, b.x, b.y, b.z, t.x,
               t.y, t.z);
  std::abort();
}

void Yield(State s) {
  LaunchState& L = *g_launch;
  Fiber& f = L.fibers[L.current];
  f.state = s;
  swapcontext(&f.context, &L.scheduler);
}

void FiberMain() {
  (*g_launch->body)();
  Yield(State::kDone);
}

int WarpOf(int linear) { return linear / 32; }

}  // namespace

int LaneId() { return g_launch->current % 32; }

void SyncThreads() { Yield(State::kAtBlockBarrier); }
void SyncWarp() { Yield(State::kAtWarpBarrier); }

uint64_t WarpExchange(uint64_t value, int source_lane) {
  LaunchState& L = *g_launch;
  const int self = L.current;
  const int src = WarpOf(self) * 32 + source_lane;
  if (src >= static_cast<int>(L.fibers.size()) || L.fibers[src].state == State::kDone)
    Fail("warp shuffle reads a lane that has exited or does not exist");
  L.exchange[self] = value;
  Yield(State::kAtWarpBarrier);
  const uint64_t got = L.exchange[src];
  Yield(State::kAtWarpBarrier);  // nobody overwrites a slot before every lane has read
  return got;
}

// Dynamic shared memory starts 128-byte aligned, as on the GPU.
unsigned char* DynamicSmem() {
  const auto at = reinterpret_cast<uintptr_t>(g_launch->smem.data());
  return g_launch->smem.data() + (128 - at % 128) % 128;
}

void CheckTile(const void* p, size_t stride_bytes) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) Fail("WMMA tile pointer is not 32-byte aligned");
  if (stride_bytes % 16 != 0) Fail("WMMA tile stride is not a multiple of 16 bytes");
}

void LaunchBody(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  LaunchState L;
  L.body = &body;
  const int n = static_cast<int>(block.x * block.y * block.z);
  if (n <= 0 || n > 1024) Fail("block size out of range");
  L.fibers.resize(n);
  L.exchange.resize(n);
  L.smem.resize(dynamic_smem + 128 + 16);
  static std::vector<std::unique_ptr<char[]>> stacks;  // kept for later launches
  while (static_cast<int>(stacks.size()) < n) stacks.emplace_back(new char[kStackBytes]);
  for (int i = 0; i < n; ++i) L.fibers[i].stack = stacks[i].get();
  g_launch = &L;
  g_grid_dim = grid;
  g_block_dim = block;
  // A GPU runs a grid's blocks in no particular order: run them shuffled (differently per
  // launch, the same from run to run), so a kernel that depends on block order fails here.
  std::vector<uint3> order;
  order.reserve(static_cast<size_t>(grid.x) * grid.y * grid.z);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) order.push_back(uint3{bx, by, bz});
  static uint64_t launches = 0;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(++launches));
  for (const uint3& block_idx : order) {
    g_block_idx = block_idx;
    for (size_t i = 0; i < L.smem.size(); ++i) L.smem[i] = static_cast<unsigned char>(0xA5 ^ i);
    for (int i = 0; i < n; ++i) {
      Fiber& f = L.fibers[i];
      f.index = uint3{static_cast<unsigned>(i % block.x),
                      static_cast<unsigned>((i / block.x) % block.y),
                      static_cast<unsigned>(i / (block.x * block.y))};
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack;
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = nullptr;
      makecontext(&f.context, FiberMain, 0);
      f.state = State::kRunnable;
    }
    for (;;) {
      bool ran = false;
      for (int i = 0; i < n; ++i) {
        Fiber& f = L.fibers[i];
        if (f.state != State::kRunnable) continue;
        ran = true;
        L.current = i;
        g_thread_idx = f.index;
        swapcontext(&L.scheduler, &f.context);
      }
      // Open the barriers every live thread has reached.
      bool live = false, all_at_block = true;
      for (const Fiber& f : L.fibers) {
        if (f.state == State::kDone) continue;
        live = true;
        if (f.state != State::kAtBlockBarrier) all_at_block = false;
      }
      if (!live) break;
      bool opened = false;
      if (all_at_block) {
        for (Fiber& f : L.fibers)
          if (f.state == State::kAtBlockBarrier) f.state = State::kRunnable;
        opened = true;
      }
      for (int w = 0; w * 32 < n; ++w) {
        bool any = false, all = true;
        for (int i = w * 32; i < n && i < (w + 1) * 32; ++i) {
          const State s = L.fibers[i].state;
          if (s == State::kDone) continue;
          any = true;
          if (s != State::kAtWarpBarrier) all = false;
        }
        if (any && all) {
          for (int i = w * 32; i < n && i < (w + 1) * 32; ++i)
            if (L.fibers[i].state == State::kAtWarpBarrier) L.fibers[i].state = State::kRunnable;
          opened = true;
        }
      }
      if (!ran && !opened) {
        for (int i = 0; i < n; ++i)
          if (L.fibers[i].state != State::kDone) {
            g_thread_idx = L.fibers[i].index;
            break;
          }
        Fail("deadlock: threads wait at barriers that can never open");
      }
    }
  }
  g_launch = nullptr;
}

}  // namespace canopy_emu
