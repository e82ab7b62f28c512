// eventfd (virtio kick/call notifiers) and a blocking poll(2) for worker
// threads that spin on many notifiers without an event loop.
#include <napi.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <mutex>
#include <vector>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, "eventfdCreate", "eventfd");
  return Napi::Number::New(env, fd);
}

Napi::Value EventfdSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "eventfdSignal");
  uint64_t one = 1;
  ssize_t n;
  do {
    n = ::write(fd, &one, sizeof(one));
  } while (n < 0 && errno == EINTR);
  // EAGAIN means the counter is saturated: the reader is already due a
  // wakeup, so dropping this signal loses nothing.
  if (n < 0 && errno != EAGAIN) ThrowErrno(env, "eventfdSignal", "write");
  return env.Undefined();
}

// ---- eventfdCall: a write to someone else's eventfd that cannot block -----
//
// A call fd belongs to the front-end: O_NONBLOCK lives in the open file
// description both processes share, so the front-end can clear it (F_SETFL)
// and saturate the counter, and a plain write(2) of 1 then sleeps until
// somebody reads, i.e. forever. Re-opening the eventfd (/proc/self/fd: ENXIO)
// or RWF_NOWAIT (EOPNOTSUPP for eventfds) cannot get the switch its own
// flags, and checking the flag first (F_GETFL or poll(POLLOUT)) races with
// the front-end changing it in between. So the write runs under a watchdog.
//
// Each thread that calls eventfdCall owns a slot in a small fixed table
// (kCallSlots; claimed on its first call, released at thread exit). Around
// the write it publishes a sequence number in its slot: inWrite = ++seq
// before, inWrite = 0 after; that is two plain stores and no syscall besides
// the write itself. One watchdog thread (started on the first call) wakes
// every kWatchdogTickNs and scans the slots: a slot whose inWrite is non-zero
// and the same as on the previous tick has had one write in progress for at
// least a tick, i.e. a write that sleeps (a write that does not block takes
// well under a microsecond). The watchdog then pthread_kill()s that thread
// with a real-time signal whose handler does nothing, installed WITHOUT
// SA_RESTART, so the write asleep in eventfd_write() returns EINTR instead of
// being restarted; eventfdCall returns -1.
//
// Once per stuck write seq, plus a resend every kResendTicks while the same
// write is still in progress: if the writer was preempted between publishing
// inWrite and entering write(2) for a whole tick, the first signal ran the
// no-op handler before the write started, and the resend still cuts it.
//
// Why a stray signal is harmless: the kernel looks at pending signals only in
// eventfd_write()'s wait loop, so a write that does not block completes
// whatever is pending; the watchdog can only end a write that would have
// blocked. A signal sent just as the write finished (the watchdog read
// inWrite, then the write returned, before the store of 0) lands in the
// writing thread right after: the handler runs and returns, in JS or in a
// later syscall, which then fails with EINTR; libuv retries its syscalls on
// EINTR (epoll_wait, read, write, ...), and Node's fs calls too. That window
// is the few instructions between the write returning and the store of 0,
// and only opens for a write that has already been seen in progress for a
// whole tick. The signal is unblocked in each thread that claims a slot, so
// it never sits pending for later.
//
// Exited threads: a slot's inWrite is 0 whenever its thread is not inside a
// write, the watchdog never signals a slot with inWrite == 0, and it signals
// under slotLock after re-checking inWrite; a thread releases its slot (at
// exit, thread_local destructor) under the same lock, so pthread_kill never
// sees a thread that has exited. Claims and releases are rare (once per
// thread); the data path takes no lock.
//
// Cost: nothing on the data path beyond two stores (the watchdog's work runs
// on its own thread); the watchdog itself is ~100 wake-ups/s of an otherwise
// sleeping thread. It blocks every signal, so process signals never go to it.

// glibc keeps the first real-time signals (SIGCANCEL, SIGSETXID) and
// SIGRTMIN already counts them out; Node and libuv use none of the RT
// signals (SIGUSR1 inspector, SIGPROF profiler, SIGCHLD, SIGINT/TERM/...).
constexpr int kCallSignalOffset = 6;
// 10 ms: a stuck write is cut within 10-20 ms (once per hostile connection,
// which is then dropped); a 1 ms tick cost a few percent of the copy path on
// two cores through the wake-ups alone.
constexpr long kWatchdogTickNs = 10 * 1000 * 1000;
constexpr uint64_t kResendTicks = 2;
constexpr int kCallSlots = 8;

// The handler must be async-signal-safe: it does nothing at all (errno is
// untouched), and its only effect is the EINTR of the interrupted write.
void OnCallWatchdog(int) {}

std::once_flag callSignalOnce;
int callSignal = 0;          // the RT signal in use, 0: none found
int callSignalErrno = 0;

// Take the first RT signal from SIGRTMIN+kCallSignalOffset on that has no
// handler yet (another library may own one), and install the no-op handler.
void InstallCallSignal() {
  for (int sig = SIGRTMIN + kCallSignalOffset; sig <= SIGRTMAX; sig++) {
    struct sigaction old;
    if (sigaction(sig, nullptr, &old) != 0) continue;
    bool isDefault = (old.sa_flags & SA_SIGINFO) == 0 && old.sa_handler == SIG_DFL;
    if (!isDefault) continue;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnCallWatchdog;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocked write must fail with EINTR
    if (sigaction(sig, &sa, nullptr) != 0) {
      callSignalErrno = errno;
      return;
    }
    callSignal = sig;
    return;
  }
  callSignalErrno = EBUSY;
}

struct CallSlot {
  std::atomic<uint64_t> inWrite{0};  // the write in progress (its seq), 0: none
  uint64_t seq = 0;                  // owner only; kept across owners, never reused
  bool owned = false;                // under slotLock
  pthread_t thread{};                // under slotLock
};
CallSlot callSlots[kCallSlots];
pthread_mutex_t slotLock = PTHREAD_MUTEX_INITIALIZER;

// This thread's slot, released when the thread exits.
struct SlotHandle {
  CallSlot* slot = nullptr;
  ~SlotHandle() {
    if (slot == nullptr) return;
    pthread_mutex_lock(&slotLock);
    slot->inWrite.store(0, std::memory_order_relaxed);
    slot->owned = false;
    pthread_mutex_unlock(&slotLock);
    slot = nullptr;
  }
};
thread_local SlotHandle slotHandle;

void* WatchdogMain(void*) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  uint64_t seen[kCallSlots] = {};      // inWrite on the previous tick
  uint64_t signalled[kCallSlots] = {}; // the seq last signalled
  uint64_t sentAt[kCallSlots] = {};    // and the tick it was sent
  for (uint64_t tick = 1;; tick++) {
    struct timespec ts = {0, kWatchdogTickNs};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    for (int i = 0; i < kCallSlots; i++) {
      uint64_t now = callSlots[i].inWrite.load(std::memory_order_acquire);
      uint64_t before = seen[i];
      seen[i] = now;
      if (now == 0 || now != before) continue;
      if (signalled[i] == now && tick - sentAt[i] < kResendTicks) continue;
      pthread_mutex_lock(&slotLock);
      // Re-check under the lock: the owner cannot release the slot (exit)
      // meanwhile, so the thread is alive if it is still in this write.
      if (callSlots[i].owned && callSlots[i].inWrite.load(std::memory_order_acquire) == now) {
        pthread_kill(callSlots[i].thread, callSignal);
        signalled[i] = now;
        sentAt[i] = tick;
      }
      pthread_mutex_unlock(&slotLock);
    }
  }
  return nullptr;
}

pthread_once_t watchdogOnce = PTHREAD_ONCE_INIT;
int watchdogErr = 0;

void StartWatchdog() {
  // Created with every signal blocked (inherited), so none reaches it even
  // before it blocks them itself.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  watchdogErr = pthread_create(&t, &attr, WatchdogMain, nullptr);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// Returns 0, or the errno of what failed (with *what naming the call).
int SetupSlow(const char** what) {
  std::call_once(callSignalOnce, InstallCallSignal);
  if (callSignal == 0) {
    *what = "sigaction";
    return callSignalErrno;
  }
  pthread_once(&watchdogOnce, StartWatchdog);
  if (watchdogErr != 0) {
    *what = "pthread_create";
    return watchdogErr;
  }
  if (slotHandle.slot != nullptr) return 0;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, callSignal);
  int err = pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  if (err != 0) {
    *what = "pthread_sigmask";
    return err;
  }
  pthread_mutex_lock(&slotLock);
  for (int i = 0; i < kCallSlots; i++) {
    if (callSlots[i].owned) continue;
    callSlots[i].owned = true;
    callSlots[i].thread = pthread_self();
    callSlots[i].inWrite.store(0, std::memory_order_relaxed);
    slotHandle.slot = &callSlots[i];
    break;
  }
  pthread_mutex_unlock(&slotLock);
  if (slotHandle.slot == nullptr) {
    *what = "watchdog slot (too many threads)";
    return EBUSY;
  }
  return 0;
}

inline int EnsureWatchdog(const char** what) {
  if (slotHandle.slot != nullptr) return 0;
  return SetupSlow(what);
}

// eventfdCall(fd): 0 when 1 was added to the counter, -1 when the write
// would block (the counter is saturated: EAGAIN on a non-blocking fd, or the
// watchdog's EINTR on one the owner made blocking). Other errors throw.
Napi::Value EventfdCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "eventfdCall");
  const char* what = nullptr;
  int err = EnsureWatchdog(&what);
  if (err != 0) ThrowErrno(env, "eventfdCall", what, err);
  CallSlot* slot = slotHandle.slot;
  slot->inWrite.store(++slot->seq, std::memory_order_relaxed);
  uint64_t one = 1;
  ssize_t n = ::write(fd, &one, sizeof(one));
  int writeErr = errno;
  slot->inWrite.store(0, std::memory_order_release);
  if (n == static_cast<ssize_t>(sizeof(one))) return Napi::Number::New(env, 0);
  // EINTR: only a write that slept can be interrupted, and an eventfd write
  // sleeps only on a saturated counter. A stray signal of another kind with
  // no SA_RESTART lands here too, and means the same.
  if (n < 0 && (writeErr == EAGAIN || writeErr == EINTR)) return Napi::Number::New(env, -1);
  ThrowErrno(env, "eventfdCall", "write", n < 0 ? writeErr : EIO);
}

Napi::Value EventfdCallSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* what = nullptr;
  int err = EnsureWatchdog(&what);
  if (err != 0) ThrowErrno(env, "eventfdCallSignal", what, err);
  return Napi::Number::New(env, callSignal);
}

Napi::Value EventfdDrain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "eventfdDrain");
  uint64_t value = 0;
  ssize_t n;
  do {
    n = ::read(fd, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    ThrowErrno(env, "eventfdDrain", "read");
  }
  // Counts above 2^53 lose precision; only "how many kicks" matters.
  return Napi::Number::New(env, static_cast<double>(value));
}

// pollReadable(fds: Int32Array, timeoutMs, readyOut?: Uint8Array): number
// Blocks the calling thread, so only meant for worker threads.
Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    ThrowType(env, "pollReadable: fds must be an Int32Array");
  Napi::Int32Array fds = info[0].As<Napi::Int32Array>();
  int timeout = static_cast<int>(IntArg(info, 1, "pollReadable", "timeoutMs", -1, INT32_MAX));
  Napi::Uint8Array ready;
  bool haveReady = !IsMissing(info, 2);
  if (haveReady) {
    ready = Uint8ArrayArg(info, 2, "pollReadable", "readyOut");
    if (ready.ElementLength() < fds.ElementLength())
      ThrowRange(env, "pollReadable: readyOut must have at least fds.length elements");
  }

  // Copy out before blocking: the arrays may live in a SharedArrayBuffer.
  size_t count = fds.ElementLength();
  std::vector<struct pollfd> pfds(count);
  for (size_t i = 0; i < count; i++) {
    pfds[i].fd = fds[i];  // negative fds are ignored by poll(2) itself
    pfds[i].events = POLLIN;
    pfds[i].revents = 0;
  }

  int n = ::poll(pfds.data(), static_cast<nfds_t>(count), timeout);
  if (n < 0) {
    // A signal is just a spurious wakeup for the caller's loop.
    if (errno != EINTR) ThrowErrno(env, "pollReadable", "poll");
    n = 0;
    for (auto& p : pfds) p.revents = 0;
  }
  if (haveReady) {
    // POLLERR/POLLHUP/POLLNVAL count as ready (and are counted by poll):
    // the caller's read then reports EOF or the error.
    uint8_t* out = ready.Data();
    for (size_t i = 0; i < count; i++) out[i] = pfds[i].revents != 0 ? 1 : 0;
  }
  return Napi::Number::New(env, n);
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate, "eventfdCreate"));
  exports.Set("eventfdSignal", Napi::Function::New(env, EventfdSignal, "eventfdSignal"));
  exports.Set("eventfdCall", Napi::Function::New(env, EventfdCall, "eventfdCall"));
  exports.Set("eventfdCallSignal", Napi::Function::New(env, EventfdCallSignal, "eventfdCallSignal"));
  exports.Set("eventfdDrain", Napi::Function::New(env, EventfdDrain, "eventfdDrain"));
  exports.Set("pollReadable", Napi::Function::New(env, PollReadable, "pollReadable"));
}

}  // namespace zc
