// eventfd (virtio kick/call notifiers) and a blocking poll(2) for worker
// threads that spin on many notifiers without an event loop.
#include <napi.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
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
// the front-end changing it in between. So the write runs under a watchdog:
// a per-thread POSIX timer (SIGEV_THREAD_ID: its signal goes to the writing
// thread only) armed just before the write and disarmed just after. Its
// signal has a handler that does nothing, installed WITHOUT SA_RESTART, so a
// write asleep in eventfd_write() returns EINTR instead of being restarted.
//
// The timer is periodic (first expiry and interval kCallWatchdogNs): if the
// thread is preempted after arming and the first tick is delivered (a no-op)
// before the write even starts, the next tick still interrupts it. A write
// that does not block completes whatever signal is pending (the kernel
// checks signal_pending() only in the wait loop), so the watchdog can only
// ever cut a write that would have blocked. A tick that comes after the
// write (before or during the disarm) runs the no-op handler on the return
// from that syscall, in this thread, and cannot be delivered later: the
// signal is never blocked in a thread that arms the timer (unblocked when
// the thread's timer is created), and a disarmed timer generates nothing.

// glibc keeps the first real-time signals (SIGCANCEL, SIGSETXID) and
// SIGRTMIN already counts them out; Node and libuv use none of the RT
// signals (SIGUSR1 inspector, SIGPROF profiler, SIGCHLD, SIGINT/TERM/...).
constexpr int kCallSignalOffset = 6;
constexpr long kCallWatchdogNs = 2 * 1000 * 1000;  // 2 ms

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

// One timer per thread that calls eventfdCall (the switch's main thread; a
// worker gets its own), deleted when the thread exits.
struct CallWatchdog {
  timer_t timer{};
  bool ready = false;
  ~CallWatchdog() {
    if (ready) timer_delete(timer);
  }
};
thread_local CallWatchdog watchdog;

// Returns 0, or the errno of what failed (with *what naming the call).
int EnsureWatchdog(const char** what) {
  std::call_once(callSignalOnce, InstallCallSignal);
  if (callSignal == 0) {
    *what = "sigaction";
    return callSignalErrno;
  }
  if (watchdog.ready) return 0;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, callSignal);
  int err = pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  if (err != 0) {
    *what = "pthread_sigmask";
    return err;
  }
  struct sigevent sev;
  std::memset(&sev, 0, sizeof(sev));
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = callSignal;
#ifdef sigev_notify_thread_id
  sev.sigev_notify_thread_id = static_cast<pid_t>(::syscall(SYS_gettid));
#else
  sev._sigev_un._tid = static_cast<pid_t>(::syscall(SYS_gettid));
#endif
  if (timer_create(CLOCK_MONOTONIC, &sev, &watchdog.timer) != 0) {
    *what = "timer_create";
    return errno;
  }
  watchdog.ready = true;
  return 0;
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
  static const struct itimerspec arm = {{0, kCallWatchdogNs}, {0, kCallWatchdogNs}};
  static const struct itimerspec disarm = {{0, 0}, {0, 0}};
  if (timer_settime(watchdog.timer, 0, &arm, nullptr) != 0) ThrowErrno(env, "eventfdCall", "timer_settime");
  uint64_t one = 1;
  ssize_t n = ::write(fd, &one, sizeof(one));
  int writeErr = errno;
  // Disarming cannot fail for a timer we own; if it did, the ticks would
  // still only run the no-op handler, but say so.
  if (timer_settime(watchdog.timer, 0, &disarm, nullptr) != 0) ThrowErrno(env, "eventfdCall", "timer_settime");
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
