// eventfd (virtio kick/call notifiers) and a blocking poll(2) for worker
// threads that spin on many notifiers without an event loop.
#include <napi.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
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
  exports.Set("eventfdDrain", Napi::Function::New(env, EventfdDrain, "eventfdDrain"));
  exports.Set("pollReadable", Napi::Function::New(env, PollReadable, "pollReadable"));
}

}  // namespace zc
