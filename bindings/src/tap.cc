// TAP devices for the uplink port: open /dev/net/tun as a TAP with a
// 12-byte virtio_net_hdr in front of every frame (IFF_VNET_HDR), and plain
// non-blocking read/write of whole frames. One frame per syscall is the TAP
// contract, so there is nothing to batch here.
#include <napi.h>

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "tapOpen", "name");
  if (name.size() >= IFNAMSIZ) ThrowRange(env, "tapOpen: name must be shorter than " + std::to_string(IFNAMSIZ) + " bytes");
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, "tapOpen", "open");
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, "tapOpen", "ioctl(TUNSETIFF)", err);
  }
  int hdr = 12;  // virtio_net_hdr_v1 / mrg_rxbuf layout, as on our vrings
  if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, "tapOpen", "ioctl(TUNSETVNETHDRSZ)", err);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  return out;
}

// (fd, flags): TUNSETOFFLOAD, the TUN_F_* offloads the reader takes, so
// the kernel may hand in frames with open checksums and GSO segments.
Napi::Value TapSetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "tapSetOffload");
  int64_t flags = IntArg(info, 1, "tapSetOffload", "flags", 0, 0xffff);
  if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0) ThrowErrno(env, "tapSetOffload", "ioctl(TUNSETOFFLOAD)");
  return env.Undefined();
}

// (name, mtu): SIOCSIFMTU, so the uplink's MTU follows the port's.
Napi::Value TapSetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "tapSetMtu", "name");
  if (name.size() >= IFNAMSIZ) ThrowRange(env, "tapSetMtu: name must be shorter than " + std::to_string(IFNAMSIZ) + " bytes");
  int64_t mtu = IntArg(info, 1, "tapSetMtu", "mtu", 68, 65535);
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) ThrowErrno(env, "tapSetMtu", "socket");
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_mtu = static_cast<int>(mtu);
  int rc = ::ioctl(s, SIOCSIFMTU, &ifr);
  int err = errno;
  ::close(s);
  if (rc < 0) ThrowErrno(env, "tapSetMtu", "ioctl(SIOCSIFMTU)", err);
  return env.Undefined();
}

// (fd, buf, off, len) -> bytes, or -1 on EAGAIN: read and write differ
// only in the syscall, so one body serves both.
template <bool kWrite>
Napi::Value FdIo(const Napi::CallbackInfo& info) {
  const char* fn = kWrite ? "fdWrite" : "fdRead";
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, fn);
  Napi::Uint8Array buf = Uint8ArrayArg(info, 1, fn, "buf");
  int64_t off = IntArg(info, 2, fn, "off", 0, static_cast<int64_t>(buf.ByteLength()));
  int64_t len = IntArg(info, 3, fn, "len", 0, static_cast<int64_t>(buf.ByteLength()) - off);
  uint8_t* p = buf.Data() + off;
  ssize_t n = kWrite ? ::write(fd, p, static_cast<size_t>(len)) : ::read(fd, p, static_cast<size_t>(len));
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Napi::Number::New(env, -1);
    ThrowErrno(env, fn, kWrite ? "write" : "read");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  exports.Set("tapSetMtu", Napi::Function::New(env, TapSetMtu, "tapSetMtu"));
  exports.Set("fdRead", Napi::Function::New(env, FdIo<false>, "fdRead"));
  exports.Set("fdWrite", Napi::Function::New(env, FdIo<true>, "fdWrite"));
}

}  // namespace zc
