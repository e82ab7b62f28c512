// Guest-memory fault guard: a front-end (VM) shares its memory as a memfd,
// and it may shrink that file under the switch (ftruncate) or hand us an fd
// that cannot be sealed. Touching a page past the end of the file then
// raises SIGBUS, which by default kills the switch and every other port.
// As Wayland compositors do for client shm pools, the switch registers each
// front-end mapping here; a SIGBUS whose address lies in one is answered by
// mapping anonymous zero memory over that whole mapping (MAP_FIXED) and
// recording the fault. The faulting access then completes on zeros, and JS
// (once per PollLoop slice) asks which mappings faulted and disconnects
// their ports. A SIGBUS anywhere else goes to the previous handler, or kills
// the process as before.
//
// Concurrency: the table is a fixed array of slots made of atomics, so the
// handler reads it without locks. Registration and unregistration (JS
// thread, under g_lock against each other) publish `end` and `id` before
// `start` (release) and clear `start` first, so the handler never sees a
// slot with a start but a stale end. Each thread of the switch (the main
// one, every data-path worker) touches only mappings it registered itself
// and unregisters them itself, so a slot cannot change while the handler,
// which runs on the faulting thread, reads it.
#include <napi.h>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <vector>

#include "errors.h"
#include "guard.h"

namespace zc {
namespace {

constexpr int kSlots = 512;

struct Slot {
  std::atomic<uintptr_t> start{0};  // 0: free
  std::atomic<uintptr_t> end{0};
  std::atomic<int32_t> id{0};
  std::atomic<uint32_t> faulted{0};
};

Slot g_slots[kSlots];
// Bumped by the handler at every survived fault: JS polls it cheaply.
std::atomic<uint32_t> g_faultCount{0};
struct sigaction g_prev;  // written once, before the handler is installed
std::atomic<bool> g_installed{false};
std::mutex g_lock;
// Faults of slots unregistered before JS took them (guarded by g_lock).
std::vector<int32_t> g_pendingIds;

// Async-signal-safety: the handler calls only mmap(2), sigaction(2) and
// raise(3), all async-signal-safe (POSIX lists sigaction and raise; mmap is
// a plain system call with no user-space state), reads and writes only
// lock-free std::atomic objects of static storage and g_prev (immutable
// once installed), allocates nothing, takes no lock and saves/restores
// errno. It may run on any thread and in the middle of any code, JIT code
// included: returning re-executes the faulting instruction, which then
// finds zero-filled memory.
void OnSigbus(int sig, siginfo_t* si, void* uctx) {
  const int savedErrno = errno;
  // si_code > 0: raised by the kernel for a memory access (BUS_ADRERR...);
  // <= 0 is kill()/sigqueue() and si_addr means nothing.
  if (si != nullptr && si->si_code > 0) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
    for (int i = 0; i < kSlots; i++) {
      Slot& s = g_slots[i];
      const uintptr_t start = s.start.load(std::memory_order_acquire);
      if (start == 0 || a < start) continue;
      const uintptr_t end = s.end.load(std::memory_order_relaxed);
      if (a >= end) continue;
      // The whole mapping, not just the page: the front-end's memory is
      // gone, every later access may as well read zeros without faulting.
      void* r = ::mmap(reinterpret_cast<void*>(start), end - start, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (r == MAP_FAILED) break;  // cannot repair: die as before
      s.faulted.store(1, std::memory_order_release);
      g_faultCount.fetch_add(1, std::memory_order_release);
      errno = savedErrno;
      return;
    }
  }
  // Not ours: chain to whoever had SIGBUS before us.
  if (g_prev.sa_flags & SA_SIGINFO) {
    if (g_prev.sa_sigaction != nullptr) {
      errno = savedErrno;
      g_prev.sa_sigaction(sig, si, uctx);
      return;
    }
  } else if (g_prev.sa_handler != SIG_DFL && g_prev.sa_handler != SIG_IGN) {
    errno = savedErrno;
    g_prev.sa_handler(sig);
    return;
  }
  // Default action: die of SIGBUS as if we had never been here. For a fault
  // the access repeats on return and the kernel kills us; for a sent signal
  // raise it again (it is blocked until we return, then delivered).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (si == nullptr || si->si_code <= 0) ::raise(sig);
  errno = savedErrno;
}

// Caller holds g_lock.
bool InstallLocked() {
  if (g_installed.load(std::memory_order_relaxed)) return true;
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &g_prev) != 0) return false;
  g_installed.store(true, std::memory_order_release);
  return true;
}

Napi::Value MappingFaultCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), g_faultCount.load(std::memory_order_acquire));
}

Napi::Value TakeMappingFaults(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int32_t> ids;
  {
    std::lock_guard<std::mutex> g(g_lock);
    ids.swap(g_pendingIds);
    for (Slot& s : g_slots) {
      if (s.start.load(std::memory_order_acquire) != 0 && s.faulted.exchange(0, std::memory_order_acq_rel) != 0)
        ids.push_back(s.id.load(std::memory_order_relaxed));
    }
  }
  Napi::Array out = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ids[i]));
  return out;
}

}  // namespace

int GuardRegister(void* addr, size_t len, int32_t id) {
  std::lock_guard<std::mutex> g(g_lock);
  if (!InstallLocked()) return -1;
  for (int i = 0; i < kSlots; i++) {
    Slot& s = g_slots[i];
    if (s.start.load(std::memory_order_relaxed) != 0) continue;
    s.end.store(reinterpret_cast<uintptr_t>(addr) + len, std::memory_order_relaxed);
    s.id.store(id, std::memory_order_relaxed);
    s.faulted.store(0, std::memory_order_relaxed);
    s.start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    return i;
  }
  errno = ENOSPC;
  return -1;
}

void GuardUnregister(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> g(g_lock);
  Slot& s = g_slots[slot];
  s.start.store(0, std::memory_order_release);
  if (s.faulted.exchange(0, std::memory_order_acq_rel) != 0) g_pendingIds.push_back(s.id.load(std::memory_order_relaxed));
}

void InitGuard(Napi::Env env, Napi::Object exports) {
  exports.Set("mappingFaultCount", Napi::Function::New(env, MappingFaultCount, "mappingFaultCount"));
  exports.Set("takeMappingFaults", Napi::Function::New(env, TakeMappingFaults, "takeMappingFaults"));
}

}  // namespace zc
