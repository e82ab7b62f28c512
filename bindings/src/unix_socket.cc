// AF_UNIX stream sockets with SCM_RIGHTS: the vhost-user control channel
// (fds for guest memory, kick/call eventfds) and the switch's own IPC.
// Every fd we create or receive is CLOEXEC so children never inherit them.
#include <napi.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

constexpr size_t kMaxSendFds = 16;
// Receive room for the kernel's own per-message maximum (SCM_MAX_FD), so
// MSG_CTRUNC only happens when the kernel itself could not install the fds
// (e.g. EMFILE), never because our buffer was small.
constexpr size_t kMaxRecvFds = 253;
// sun_path must hold the path plus its NUL terminator.
constexpr size_t kMaxPathBytes = sizeof(((struct sockaddr_un*)nullptr)->sun_path) - 1;

struct sockaddr_un MakeAddr(Napi::Env env, const char* fn, const std::string& path) {
  if (path.empty()) ThrowRange(env, std::string(fn) + ": path must not be empty");
  if (path.size() > kMaxPathBytes)
    ThrowRange(env, std::string(fn) + ": path is " + std::to_string(path.size()) +
                        " bytes; the sun_path limit is " + std::to_string(kMaxPathBytes) +
                        " bytes");
  struct sockaddr_un addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

[[noreturn]] void CloseAndThrow(Napi::Env env, int fd, const char* fn, const char* syscall) {
  int err = errno;
  ::close(fd);
  ThrowErrno(env, fn, syscall, err);
}

Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "unixListen", "path");
  int backlog = static_cast<int>(OptIntArg(info, 1, "unixListen", "backlog", 0, INT32_MAX, 128));
  struct sockaddr_un addr = MakeAddr(env, "unixListen", path);

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "unixListen", "socket");
  // No unlink of a stale path: whether to replace it is the caller's call.
  if (::bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0)
    CloseAndThrow(env, fd, "unixListen", "bind");
  if (::listen(fd, backlog) < 0) CloseAndThrow(env, fd, "unixListen", "listen");
  return Napi::Number::New(env, fd);
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = FdArg(info, 0, "unixAccept", "listenFd");
  for (;;) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Napi::Number::New(env, fd);
    if (errno == EINTR) continue;
    // ECONNABORTED: the client gave up before we accepted; like EAGAIN
    // there is simply nothing to accept right now.
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
      return Napi::Number::New(env, -1);
    ThrowErrno(env, "unixAccept", "accept4");
  }
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "unixConnect", "path");
  bool nonBlocking = !IsMissing(info, 1) && info[1].ToBoolean().Value();
  struct sockaddr_un addr = MakeAddr(env, "unixConnect", path);

  if (nonBlocking) {
    // An AF_UNIX connect completes at once or fails: with O_NONBLOCK a full
    // backlog is EAGAIN instead of a wait (no EINPROGRESS on Linux; should a
    // kernel return it, treat it the same: try again later).
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, "unixConnect", "socket");
    for (;;) {
      if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) == 0)
        return Napi::Number::New(env, fd);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINPROGRESS) {
        ::close(fd);
        return Napi::Number::New(env, -1);
      }
      CloseAndThrow(env, fd, "unixConnect", "connect");
    }
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "unixConnect", "socket");
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0) {
    if (errno != EINTR) CloseAndThrow(env, fd, "unixConnect", "connect");
    // Interrupted blocking connect keeps going in the kernel: wait for it
    // to finish and fetch its result instead of connecting again.
    struct pollfd p = {fd, POLLOUT, 0};
    while (::poll(&p, 1, -1) < 0) {
      if (errno != EINTR) CloseAndThrow(env, fd, "unixConnect", "poll");
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
      CloseAndThrow(env, fd, "unixConnect", "getsockopt");
    if (soerr != 0) {
      errno = soerr;
      CloseAndThrow(env, fd, "unixConnect", "connect");
    }
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    CloseAndThrow(env, fd, "unixConnect", "fcntl");
  return Napi::Number::New(env, fd);
}

// unixSendMsg(fd, data: Uint8Array, fds?: number[]): bytes written | -1
Napi::Value UnixSendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "unixSendMsg");
  Napi::Uint8Array data = Uint8ArrayArg(info, 1, "unixSendMsg", "data");

  std::vector<int> fds;
  if (!IsMissing(info, 2)) {
    Napi::Array arr = ArrayArg(info, 2, "unixSendMsg", "fds");
    uint32_t n = arr.Length();
    if (n > kMaxSendFds)
      ThrowRange(env, "unixSendMsg: at most " + std::to_string(kMaxSendFds) + " fds per message");
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsNumber()) ThrowType(env, "unixSendMsg: fds must contain only numbers");
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= INT32_MAX) || static_cast<double>(static_cast<int>(d)) != d)
        ThrowRange(env, "unixSendMsg: fds must contain integers >= 0");
      fds.push_back(static_cast<int>(d));
    }
  }
  // On a stream socket the kernel attaches SCM_RIGHTS to data bytes; with
  // zero bytes the fds would be silently dropped.
  if (!fds.empty() && data.ByteLength() == 0)
    ThrowRange(env, "unixSendMsg: data must be at least 1 byte when sending fds");

  struct iovec iov;
  iov.iov_base = data.Data();
  iov.iov_len = data.ByteLength();
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;

  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSendFds)];
  if (!fds.empty()) {
    size_t bytes = sizeof(int) * fds.size();
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(bytes);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(bytes);
    std::memcpy(CMSG_DATA(c), fds.data(), bytes);
  }

  ssize_t n;
  do {
    // MSG_NOSIGNAL: a dead peer must be an EPIPE error, not a SIGPIPE.
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, "unixSendMsg", "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// unixRecvMsg(fd, buf, fdsOut: number[], maxBytes?): bytes | 0 (EOF) | -1
Napi::Value UnixRecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "unixRecvMsg");
  Napi::Uint8Array buf = Uint8ArrayArg(info, 1, "unixRecvMsg", "buf");
  Napi::Array fdsOut = ArrayArg(info, 2, "unixRecvMsg", "fdsOut");
  if (buf.ByteLength() == 0)
    ThrowRange(env, "unixRecvMsg: buf must not be empty (0 bytes would look like EOF)");
  int64_t maxBytes = OptIntArg(info, 3, "unixRecvMsg", "maxBytes", 1,
                               static_cast<int64_t>(buf.ByteLength()),
                               static_cast<int64_t>(buf.ByteLength()));

  struct iovec iov;
  iov.iov_base = buf.Data();
  iov.iov_len = static_cast<size_t>(maxBytes);
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxRecvFds)];
  struct msghdr msg;

  ssize_t n;
  do {
    std::memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, "unixRecvMsg", "recvmsg");
  }

  // Hand over every fd that arrived before anything can throw: they are
  // open in this process now and only the caller can close them.
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      std::memcpy(&rfd, p + i * sizeof(int), sizeof(int));
      fdsOut.Set(fdsOut.Length(), Napi::Number::New(env, rfd));
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    Napi::Error e = Napi::Error::New(
        env, "unixRecvMsg: ancillary data truncated, some passed fds were lost");
    e.Set("code", Napi::String::New(env, "ECTRUNC"));
    // The data bytes were consumed; let the caller still use them.
    e.Set("bytesRead", Napi::Number::New(env, static_cast<double>(n)));
    throw e;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    ThrowErrno(env, "socketPair", "socketpair");
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

// A datagram address: a path, or "@name" for the abstract namespace (as
// systemd's NOTIFY_SOCKET may be). Sets *len to the address length to pass.
struct sockaddr_un MakeDgramAddr(Napi::Env env, const char* fn, const std::string& path, socklen_t* len) {
  if (!path.empty() && path[0] == '@') {
    struct sockaddr_un addr = MakeAddr(env, fn, path);
    addr.sun_path[0] = '\0';
    *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size());
    return addr;
  }
  *len = sizeof(struct sockaddr_un);
  return MakeAddr(env, fn, path);
}

// unixDgramSend(path, data): one datagram to a bound AF_UNIX datagram socket
// (never blocks: MSG_DONTWAIT). Returns bytes sent, -1 on EAGAIN.
Napi::Value UnixDgramSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "unixDgramSend", "path");
  Napi::Uint8Array data = Uint8ArrayArg(info, 1, "unixDgramSend", "data");
  socklen_t len;
  struct sockaddr_un addr = MakeDgramAddr(env, "unixDgramSend", path, &len);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "unixDgramSend", "socket");
  for (;;) {
    ssize_t n = ::sendto(fd, data.Data(), data.ByteLength(), MSG_DONTWAIT | MSG_NOSIGNAL,
                         reinterpret_cast<struct sockaddr*>(&addr), len);
    if (n >= 0) {
      ::close(fd);
      return Napi::Number::New(env, static_cast<double>(n));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ::close(fd);
      return Napi::Number::New(env, -1);
    }
    CloseAndThrow(env, fd, "unixDgramSend", "sendto");
  }
}

// unixDgramBind(path): a bound AF_UNIX datagram socket (NONBLOCK, CLOEXEC);
// read it with unixRecvMsg.
Napi::Value UnixDgramBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "unixDgramBind", "path");
  socklen_t len;
  struct sockaddr_un addr = MakeDgramAddr(env, "unixDgramBind", path, &len);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "unixDgramBind", "socket");
  if (::bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) < 0)
    CloseAndThrow(env, fd, "unixDgramBind", "bind");
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixSendMsg", Napi::Function::New(env, UnixSendMsg, "unixSendMsg"));
  exports.Set("unixRecvMsg", Napi::Function::New(env, UnixRecvMsg, "unixRecvMsg"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("unixDgramSend", Napi::Function::New(env, UnixDgramSend, "unixDgramSend"));
  exports.Set("unixDgramBind", Napi::Function::New(env, UnixDgramBind, "unixDgramBind"));
}

}  // namespace zc
