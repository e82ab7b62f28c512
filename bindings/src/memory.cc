// memfd / mmap / munmap / fstat: guest-shareable memory as JS ArrayBuffers.
//
// A mapping is exposed as an external ArrayBuffer. It can be released two
// ways: explicitly with munmap() (which also detaches the ArrayBuffer so JS
// can no longer reach the freed pages) or by the GC finalizer. A table keyed
// by address records which mappings are still live so the two paths never
// unmap twice. Each mapping also has its own heap record (passed to the
// finalizer as hint) so that after munmap() + a new mmap() that happens to
// reuse the same address, the *old* buffer's finalizer cannot unmap the new
// mapping.
#include <napi.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

struct Mapping {
  void* addr;
  size_t len;
  bool unmapped;  // set (under the table lock) once munmap(2) has been done
};

// Shared by all threads: worker_threads each run finalizers on their own
// thread, and a buffer can be munmap()ed from any of them.
std::mutex g_lock;
std::unordered_map<void*, Mapping*> g_mappings;

// Runs on the JS thread of the env that created the buffer, when GC collects
// it (or at env teardown). Frees the record; unmaps only if munmap() did not.
void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  bool doUnmap = false;
  {
    std::lock_guard<std::mutex> g(g_lock);
    if (!m->unmapped) {
      m->unmapped = true;
      g_mappings.erase(m->addr);
      doUnmap = true;
    }
  }
  if (doUnmap) ::munmap(m->addr, m->len);
  delete m;
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "memfdCreate", "name");
  int64_t size = IntArg(info, 1, "memfdCreate", "size", 0, kMaxSafeInteger);
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, "memfdCreate", "memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, "memfdCreate", "ftruncate", err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mmapShared");
  int64_t size = IntArg(info, 1, "mmapShared", "size", 0, kMaxSafeInteger);
  int64_t offset = OptIntArg(info, 2, "mmapShared", "offset", 0, kMaxSafeInteger, 0);
  if (size == 0) ThrowRange(env, "mmapShared: size must be > 0");
  static const int64_t page = ::sysconf(_SC_PAGESIZE);
  if (offset % page != 0)
    ThrowRange(env, "mmapShared: offset must be a multiple of the page size (" +
                        std::to_string(page) + ")");

  void* addr = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE,
                      MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, "mmapShared", "mmap");

  auto* m = new Mapping{addr, static_cast<size_t>(size), false};
  {
    std::lock_guard<std::mutex> g(g_lock);
    g_mappings[addr] = m;
  }
  try {
    return Napi::ArrayBuffer::New(env, addr, m->len, FinalizeMapping, m);
  } catch (...) {
    // e.g. external buffers refused (V8 sandbox): do not leak the mapping.
    {
      std::lock_guard<std::mutex> g(g_lock);
      g_mappings.erase(addr);
    }
    ::munmap(addr, m->len);
    delete m;
    throw;
  }
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer())
    ThrowType(env, "munmap: buf must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* addr = ab.Data();  // nullptr once detached
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> g(g_lock);
    auto it = addr ? g_mappings.find(addr) : g_mappings.end();
    if (it != g_mappings.end() && it->second->len == ab.ByteLength()) {
      m = it->second;
      m->unmapped = true;  // the finalizer will now only free the record
      g_mappings.erase(it);
    }
  }
  if (!m) {
    Napi::Error e = Napi::Error::New(
        env, "munmap: buffer is not a live mapping created by mmapShared (already unmapped?)");
    e.Set("code", Napi::String::New(env, "EINVAL"));
    throw e;
  }
  // Detach before unmapping so no JS (or typed-array view) can observe the
  // hole; after this ab.byteLength === 0 and every view has length 0.
  ab.Detach();
  if (::munmap(m->addr, m->len) < 0) ThrowErrno(env, "munmap", "munmap");
  return env.Undefined();
}

Napi::Value FdSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fdSize");
  struct stat st;
  if (::fstat(fd, &st) < 0) ThrowErrno(env, "fdSize", "fstat");
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared, "mmapShared"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("fdSize", Napi::Function::New(env, FdSize, "fdSize"));
}

}  // namespace zc
