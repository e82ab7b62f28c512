// errno -> JS Error helper, shared by every binding file.
//
// Every syscall failure becomes `new Error("<jsFunction>: <strerror>")` with
// `.code` = errno name ("ENOENT"), `.errno` = positive errno number and
// `.syscall` = the libc call that failed, mirroring Node's own fs/net errors
// so callers can switch on `err.code`.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace zc {

// Errno name without depending on a hand-written table: glibc >= 2.32 has
// strerrorname_np; otherwise libuv (linked into node) knows the common ones.
inline std::string ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) return name;
#endif
  char buf[64];
  return uv_err_name_r(-err, buf, sizeof(buf));
}

// strerror() is not thread-safe and worker_threads call into us concurrently;
// GNU strerror_r returns a pointer that may or may not be `buf`.
inline std::string ErrnoMessage(int err) {
  char buf[256];
  return strerror_r(err, buf, sizeof(buf));
}

inline Napi::Error ErrnoError(Napi::Env env, const char* fn, const char* syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(fn) + ": " + ErrnoMessage(err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

// Call right after the failing syscall (errno must still be intact).
[[noreturn]] inline void ThrowErrno(Napi::Env env, const char* fn, const char* syscall, int err = errno) {
  throw ErrnoError(env, fn, syscall, err);
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& msg) {
  throw Napi::RangeError::New(env, msg);
}

}  // namespace zc
