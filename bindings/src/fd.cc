// Generic fd operations used by every other part (close, dup, O_NONBLOCK),
// sched_yield for polling loops, and thread CPU affinity for data-path workers.
#include <napi.h>

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "closeFd");
  // On Linux the fd is released even when close() reports EINTR, so
  // retrying could close an unrelated, newly reused fd: treat it as done.
  if (::close(fd) < 0 && errno != EINTR) ThrowErrno(env, "closeFd", "close");
  return env.Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "dupFd");
  int nfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) ThrowErrno(env, "dupFd", "fcntl");
  return Napi::Number::New(env, nfd);
}

Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "setNonBlocking");
  bool on = BoolArg(info, 1, "setNonBlocking", "on");
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) ThrowErrno(env, "setNonBlocking", "fcntl");
  int next = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (next != flags && ::fcntl(fd, F_SETFL, next) < 0)
    ThrowErrno(env, "setNonBlocking", "fcntl");
  return env.Undefined();
}

}  // namespace

// sched_yield(2): a polling loop that found nothing gives its core to
// whoever else is runnable (three pollers on two cores), yet comes back at
// once when nobody is.
Napi::Value SchedYield(const Napi::CallbackInfo& info) {
  ::sched_yield();
  return info.Env().Undefined();
}

// sched_setaffinity(2) on the calling thread only (pid 0 is "this thread"
// on Linux): a data-path worker pins itself to its one CPU; the main
// thread and the other workers keep their own masks.
Napi::Value PinThisThread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int cpu = static_cast<int>(IntArg(info, 0, "pinThisThread", "cpu", 0, CPU_SETSIZE - 1));
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) < 0) ThrowErrno(env, "pinThisThread", "sched_setaffinity");
  return env.Undefined();
}

// The CPUs the calling thread may run on (sched_getaffinity(2)).
Napi::Value ThisThreadCpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) < 0) ThrowErrno(env, "thisThreadCpus", "sched_getaffinity");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) out.Set(n++, Napi::Number::New(env, c));
  return out;
}

void InitFd(Napi::Env env, Napi::Object exports) {
  exports.Set("schedYield", Napi::Function::New(env, SchedYield, "schedYield"));
  exports.Set("pinThisThread", Napi::Function::New(env, PinThisThread, "pinThisThread"));
  exports.Set("thisThreadCpus", Napi::Function::New(env, ThisThreadCpus, "thisThreadCpus"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking, "setNonBlocking"));
}

}  // namespace zc
