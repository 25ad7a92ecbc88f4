#pragma once
// The threads of one emulated CUDA block as fibers on the calling OS thread (cuda_shim.hpp):
// each CUDA thread has its own stack and runs until it reaches a barrier or returns, then the
// next one runs. A warp barrier (__syncwarp, and so every shuffle and emulated mma/ldmatrix)
// releases when every lane of the warp that has not returned waits at it; a block barrier
// (__syncthreads) when every thread of the block that has not returned does. Anything else,
// e.g. a warp whose lanes wait at different barriers, is a deadlock on a GPU too: reported, then
// abort. A switch is a few dozen instructions instead of an OS thread handoff, which is what
// made the emulation of shuffle-heavy kernels slow.
//
// Fibers run deterministically, in the order that run_block explains. State the emulated instructions keep per
// thread must be indexed by threadIdx.x, not thread_local (all fibers share one OS thread).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

// The hand-written switch on x86-64; ucontext elsewhere, or where EMU_UCONTEXT is defined (to
// check that path on x86-64 too).
#if EMU_ASM_SWITCH && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#define EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace emu {

#if EMU_ASM_SWITCH
// emu_switch(save, load): pushes the callee-saved registers and the SSE/x87 control words, stores
// the stack pointer in *save, loads `load` and pops the same from there. Weak, so that every
// object file that includes this header may carry the one definition.
extern "C" void emu_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .weak emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
#endif

enum class State { ready, at_warp_barrier, at_block_barrier, done };

struct Fiber {
  State state = State::ready;
#if EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;
};

inline constexpr size_t kStack = size_t(1) << 18;  // 256 KiB per CUDA thread, a guard page below

struct Block {
  std::vector<Fiber> fibers;
  int current = -1;
  const std::function<void()>* body = nullptr;  // the kernel call, run by every thread
  std::function<void(unsigned)> on_switch;               // sets threadIdx for the thread about to run
#if EMU_ASM_SWITCH
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler;
#endif
  ~Block() {
    for (Fiber& f : fibers)
      if (f.stack) munmap(f.stack, kStack);
  }
};

inline Block& block() {
  static Block b;
  return b;
}

inline void to_scheduler() {
  Block& b = block();
  Fiber& f = b.fibers[static_cast<size_t>(b.current)];
#if EMU_ASM_SWITCH
  emu_switch(&f.sp, b.scheduler_sp);
#else
  swapcontext(&f.ctx, &b.scheduler);
#endif
}

[[noreturn]] inline void fiber_main() {
  Block& b = block();
  (*b.body)();
  b.fibers[static_cast<size_t>(b.current)].state = State::done;
  to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

inline void start(Fiber& f) {
  if (!f.stack) {
    void* m = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) std::perror("emulation: fiber stack"), std::abort();
    f.stack = static_cast<char*>(m);
    mprotect(f.stack, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow faults
  }
#if EMU_ASM_SWITCH
  // What emu_switch pops: the control words (MXCSR default, x87 double-extended), six zero
  // registers, then fiber_main as the return address, entered as if called (rsp = 8 mod 16).
  auto* top = reinterpret_cast<uint64_t*>(f.stack + kStack);
  *--top = 0;  // fiber_main's own return address: none
  *--top = reinterpret_cast<uint64_t>(&fiber_main);
  for (int r = 0; r < 6; ++r) *--top = 0;
  *--top = 0x1F80ull | (0x037Full << 32);
  f.sp = top;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStack;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
  f.state = State::ready;
}

inline void resume(int t) {
  Block& b = block();
  b.current = t;
  b.on_switch(static_cast<unsigned>(t));
  Fiber& f = b.fibers[static_cast<size_t>(t)];
#if EMU_ASM_SWITCH
  emu_switch(&b.scheduler_sp, f.sp);
#else
  swapcontext(&b.scheduler, &f.ctx);
#endif
}

// Runs one block of n threads, each calling body(); on_switch(t) runs before thread t is resumed
// (it sets the thread's index).
//
// Scheduling, chosen to expose missing barriers: each warp in turn runs as far as it can (its
// lanes one after another to each warp barrier, which then releases) before the next warp
// starts, so a warp meets shared memory that other warps have not written yet (NaN) or have
// already overwritten, unless a block barrier orders the two. The warps run in ascending order
// up to a block barrier and in descending order up to the next, and the lanes likewise
// alternate at every warp barrier, so an unordered read is caught from either side.
inline void run_block(int n, const std::function<void()>& body, std::function<void(unsigned)> on_switch) {
  Block& b = block();
  if (b.fibers.size() < static_cast<size_t>(n)) b.fibers.resize(static_cast<size_t>(n));
  b.body = &body;
  b.on_switch = std::move(on_switch);
  for (int t = 0; t < n; ++t) start(b.fibers[static_cast<size_t>(t)]);
  auto state = [&](int t) -> State& { return b.fibers[static_cast<size_t>(t)].state; };
  const int warps = (n + 31) / 32;
  for (int phase = 0;; ++phase) {
    for (int x = 0; x < warps; ++x) {
      const int w0 = 32 * (phase % 2 ? warps - 1 - x : x), w1 = std::min(n, w0 + 32);
      for (int release = phase;; ++release) {
        for (int y = 0; y < w1 - w0; ++y) {
          const int t = release % 2 ? w1 - 1 - y : w0 + y;
          if (state(t) == State::ready) resume(t);
        }
        bool any = false, all_at_warp = true;
        for (int t = w0; t < w1; ++t) {
          if (state(t) == State::done) continue;
          any = true;
          all_at_warp &= state(t) == State::at_warp_barrier;
        }
        if (!any || !all_at_warp) break;  // done, or up to a block barrier
        for (int t = w0; t < w1; ++t)
          if (state(t) != State::done) state(t) = State::ready;
      }
    }
    bool live = false, all_at_block = true;
    for (int t = 0; t < n; ++t) {
      if (state(t) == State::done) continue;
      live = true;
      all_at_block &= state(t) == State::at_block_barrier;
    }
    if (!live) return;
    if (!all_at_block) {
      std::fprintf(stderr, "emulation: deadlock in a block of %d threads (threads wait at different barriers)\n", n);
      std::abort();
    }
    for (int t = 0; t < n; ++t)
      if (state(t) != State::done) state(t) = State::ready;
  }
}

inline void wait_at(State s) {
  Block& b = block();
  b.fibers[static_cast<size_t>(b.current)].state = s;
  to_scheduler();
}

}  // namespace emu
