// Argument validation: bad JS input must throw TypeError/RangeError, never
// reach a syscall as garbage or crash the process.
#pragma once

#include <napi.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "errors.h"

namespace zc {

constexpr int64_t kMaxSafeInteger = 9007199254740991;  // Number.MAX_SAFE_INTEGER

inline std::string Prefix(const char* fn, const char* name) {
  return std::string(fn) + ": " + name;
}

inline bool IsMissing(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsUndefined();
}

// Integer-valued Number in [min, max].
inline int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                      const char* name, int64_t min, int64_t max) {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsNumber())
    ThrowType(env, Prefix(fn, name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v)
    ThrowRange(env, Prefix(fn, name) + " must be an integer");
  if (v < static_cast<double>(min) || v > static_cast<double>(max))
    ThrowRange(env, Prefix(fn, name) + " must be >= " + std::to_string(min) +
                        " and <= " + std::to_string(max));
  return static_cast<int64_t>(v);
}

inline int64_t OptIntArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                         const char* name, int64_t min, int64_t max, int64_t dflt) {
  return IsMissing(info, i) ? dflt : IntArg(info, i, fn, name, min, max);
}

// Any int32 is accepted, negatives included: the kernel answers EBADF for
// them, which is the documented error (closeFd(-1) -> EBADF).
inline int FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                 const char* name = "fd") {
  return static_cast<int>(IntArg(info, i, fn, name, INT32_MIN, INT32_MAX));
}

// String without embedded NUL (it would silently truncate a C path).
inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                             const char* name) {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsString())
    ThrowType(env, Prefix(fn, name) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    ThrowType(env, Prefix(fn, name) + " must not contain NUL bytes");
  return s;
}

inline bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                    const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean())
    ThrowType(info.Env(), Prefix(fn, name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

// Uint8Array (Buffer included). Returns a view; the caller reads
// Data()/ByteLength() synchronously, before any JS can run.
inline Napi::Uint8Array Uint8ArrayArg(const Napi::CallbackInfo& info, size_t i,
                                      const char* fn, const char* name) {
  if (i < info.Length() && info[i].IsTypedArray()) {
    Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_uint8_array) return ta.As<Napi::Uint8Array>();
  }
  ThrowType(info.Env(), Prefix(fn, name) + " must be a Uint8Array");
}

inline Napi::Array ArrayArg(const Napi::CallbackInfo& info, size_t i, const char* fn,
                            const char* name) {
  if (i >= info.Length() || !info[i].IsArray())
    ThrowType(info.Env(), Prefix(fn, name) + " must be an array");
  return info[i].As<Napi::Array>();
}

}  // namespace zc
