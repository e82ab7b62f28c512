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

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include <fcntl.h>

#include "args.h"
#include "errors.h"
#include "guard.h"

namespace zc {
namespace {

struct Mapping {
  void* addr;
  size_t len;
  bool unmapped;  // set (under the table lock) once munmap(2) has been done
  int guardSlot = -1;  // guard.cc slot while registered by guardMapping()
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
      GuardUnregister(m->guardSlot);  // before the address can be reused
      m->guardSlot = -1;
    }
  }
  if (doUnmap) ::munmap(m->addr, m->len);
  delete m;
}

// mmap(MAP_SHARED) at an address that is a multiple of align (0: anywhere).
// A huge-page-backed region can be mapped with PMD entries only when its
// address is 2 MiB aligned, so reserve align bytes more than needed, map
// the file over the aligned part (MAP_FIXED) and release the slack.
void* MapAligned(int fd, size_t size, off_t offset, size_t align) {
  const int prot = PROT_READ | PROT_WRITE;
  if (align == 0) return ::mmap(nullptr, size, prot, MAP_SHARED, fd, offset);
  size_t span = size + align;
  char* r = static_cast<char*>(::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (r == MAP_FAILED) return MAP_FAILED;
  char* a = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(r) + align - 1) & ~(uintptr_t)(align - 1));
  void* m = ::mmap(a, size, prot, MAP_SHARED | MAP_FIXED, fd, offset);
  if (m == MAP_FAILED) {
    int err = errno;
    ::munmap(r, span);
    errno = err;
    return MAP_FAILED;
  }
  if (a > r) ::munmap(r, a - r);
  char* end = a + size;
  if (r + span > end) ::munmap(end, (r + span) - end);
  return a;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

// Back a live mapping with transparent huge pages now: MADV_HUGEPAGE for
// later faults, MADV_COLLAPSE for what exists (shmem collapse works even
// when the system's shmem THP setting is "never", but only over populated
// pages, hence MADV_POPULATE_WRITE first). Returns null, or the errno name
// of the collapse; never throws for a refusal (huge pages are an
// optimisation, the caller logs the outcome).
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer())
    ThrowType(env, "adviseHugePages: buf must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* addr = ab.Data();
  size_t whole = ab.ByteLength();
  {
    std::lock_guard<std::mutex> g(g_lock);
    auto it = addr ? g_mappings.find(addr) : g_mappings.end();
    if (it == g_mappings.end() || it->second->len != whole)
      ThrowRange(env, "adviseHugePages: buffer is not a live mapping created by mmapShared");
  }
  // Optional: only the first len bytes (rounded up to 2 MiB, at most the mapping).
  const size_t huge = 2u << 20;
  size_t len = static_cast<size_t>(OptIntArg(info, 1, "adviseHugePages", "len", 1, kMaxSafeInteger, static_cast<int64_t>(whole)));
  len = (len + huge - 1) / huge * huge;
  if (len > whole) len = whole;
  ::madvise(addr, len, MADV_HUGEPAGE);
  if (::madvise(addr, len, MADV_POPULATE_WRITE) != 0) {
    // Before Linux 5.14: fault every page in by hand.
    static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    volatile char* p = static_cast<volatile char*>(addr);
    for (size_t i = 0; i < len; i += page) p[i] = p[i];
  }
  if (::madvise(addr, len, MADV_COLLAPSE) == 0) return env.Null();
  return Napi::String::New(env, ErrnoName(errno));
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

  int64_t align = OptIntArg(info, 3, "mmapShared", "align", 0, int64_t{1} << 30, 0);
  if (align != 0 && (align < page || (align & (align - 1)) != 0))
    ThrowRange(env, "mmapShared: align must be 0 or a power of two >= the page size");

  void* addr = MapAligned(fd, static_cast<size_t>(size), static_cast<off_t>(offset),
                          static_cast<size_t>(align));
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
      GuardUnregister(m->guardSlot);
      m->guardSlot = -1;
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

// memfd_create(MFD_ALLOW_SEALING) + ftruncate + F_ADD_SEALS(SHRINK|GROW|SEAL):
// a region whose size nobody (its creator included) can change any more,
// so no holder of the fd can pull pages from under another's mapping.
Napi::Value MemfdCreateSealed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "memfdCreateSealed", "name");
  int64_t size = IntArg(info, 1, "memfdCreateSealed", "size", 0, kMaxSafeInteger);
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) ThrowErrno(env, "memfdCreateSealed", "memfd_create");
  const char* failed = nullptr;
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0) failed = "ftruncate";
  else if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) failed = "fcntl";
  if (failed) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, "memfdCreateSealed", failed, err);
  }
  return Napi::Number::New(env, fd);
}

// fcntl(F_GET_SEALS): the F_SEAL_* bits (EINVAL for a file without seals support).
Napi::Value FdSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fdSeals");
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) ThrowErrno(env, "fdSeals", "fcntl");
  return Napi::Number::New(env, seals);
}

// Register a live mmapShared mapping with the SIGBUS guard (guard.cc) under
// `id`: a fault in it is survived and reported by takeMappingFaults(). The
// registration ends when the mapping is unmapped (munmap or finalizer).
Napi::Value GuardMapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer())
    ThrowType(env, "guardMapping: buf must be an ArrayBuffer");
  int64_t id = IntArg(info, 1, "guardMapping", "id", 0, INT32_MAX);
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* addr = ab.Data();
  std::lock_guard<std::mutex> g(g_lock);
  auto it = addr ? g_mappings.find(addr) : g_mappings.end();
  if (it == g_mappings.end() || it->second->len != ab.ByteLength())
    ThrowRange(env, "guardMapping: buffer is not a live mapping created by mmapShared");
  Mapping* m = it->second;
  if (m->guardSlot >= 0) ThrowRange(env, "guardMapping: mapping is already guarded");
  int slot = GuardRegister(m->addr, m->len, static_cast<int32_t>(id));
  if (slot < 0) ThrowErrno(env, "guardMapping", errno == ENOSPC ? "guard table" : "sigaction");
  m->guardSlot = slot;
  return env.Undefined();
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared, "mmapShared"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages, "adviseHugePages"));
  exports.Set("fdSize", Napi::Function::New(env, FdSize, "fdSize"));
  exports.Set("memfdCreateSealed", Napi::Function::New(env, MemfdCreateSealed, "memfdCreateSealed"));
  exports.Set("fdSeals", Napi::Function::New(env, FdSeals, "fdSeals"));
  exports.Set("guardMapping", Napi::Function::New(env, GuardMapping, "guardMapping"));
}

}  // namespace zc
