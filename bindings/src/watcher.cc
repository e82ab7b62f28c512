// FdWatcher: "call me when this fd is readable" on the *calling* env's libuv
// loop (napi_get_uv_event_loop), so it works in the main thread and inside
// worker_threads alike. No reading happens here; the JS callback does that.
//
// Lifetime rules:
//  * the uv_poll_t lives in a separately heap-allocated PollHandle, because
//    uv_close() finishes asynchronously and may outlive the JS object;
//  * while started, the JS object is pinned (strong ref) so GC cannot free
//    the callback under an armed handle; stop()/close() unpin it;
//  * close() also drops the callback reference: it is a strong native root,
//    and a callback that closes over the watcher's owner would otherwise
//    keep the owner and the watcher itself alive after close();
//  * at env teardown (worker exit) an async cleanup hook closes the handle
//    and keeps node running the loop until the close callback has run,
//    otherwise uv_loop_close() would find an open handle and abort.
#include <napi.h>
#include <uv.h>

#include <memory>

#include "args.h"
#include "errors.h"

namespace zc {
namespace {

class FdWatcher;

struct PollHandle {
  uv_poll_t poll;
  FdWatcher* owner;  // nullptr once the owner is gone or detached
  napi_async_cleanup_hook_handle hook;
  bool closing;
};

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {
                           InstanceMethod<&FdWatcher::Start>("start"),
                           InstanceMethod<&FdWatcher::Stop>("stop"),
                           InstanceMethod<&FdWatcher::Close>("close"),
                           InstanceMethod<&FdWatcher::RefHandle>("ref"),
                           InstanceMethod<&FdWatcher::UnrefHandle>("unref"),
                       });
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    // fd >= 0 checked here: libuv asserts (aborts) on fd < -1.
    int fd = static_cast<int>(IntArg(info, 0, "FdWatcher", "fd", 0, INT32_MAX));
    if (info.Length() < 2 || !info[1].IsFunction())
      ThrowType(env, "FdWatcher: onReadable must be a function");

    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    // A plain object as async resource: using `this` would make the async
    // context hold the wrapper strongly and it could never be collected.
    ctx_ = std::make_unique<Napi::AsyncContext>(env, "zcswitch:FdWatcher",
                                                Napi::Object::New(env));

    // The uv handle is created last: nothing may throw once it exists.
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
      throw Napi::Error::New(env, "FdWatcher: no libuv loop for this environment");

    auto* h = new PollHandle{};
    // Note: uv_poll_init puts the fd into O_NONBLOCK mode, and fails with
    // EEXIST if another uv_poll_t on this loop already watches the fd.
    int r = uv_poll_init(loop, &h->poll, fd);
    if (r < 0) {
      delete h;  // never initialised, so no uv_close needed
      ThrowErrno(env, "FdWatcher", "uv_poll_init", -r);
    }
    h->poll.data = h;
    h->owner = this;
    if (napi_add_async_cleanup_hook(env, OnEnvTeardown, h, &h->hook) != napi_ok) h->hook = nullptr;
    h_ = h;
  }

  ~FdWatcher() override {
    // GC or env teardown. Only a stopped watcher can be collected (started
    // ones are pinned), but close the handle either way.
    if (h_ != nullptr) {
      uv_poll_stop(&h_->poll);
      BeginClose(h_);
      h_ = nullptr;
    }
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (h_ == nullptr) throw Napi::Error::New(env, "FdWatcher.start: watcher is closed");
    if (active_) return env.Undefined();
    int r = uv_poll_start(&h_->poll, UV_READABLE, OnPoll);
    if (r < 0) ThrowErrno(env, "FdWatcher.start", "uv_poll_start", -r);
    active_ = true;
    Pin();
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPolling();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) {  // idempotent
      StopPolling();
      h_->owner = nullptr;
      BeginClose(h_);
      h_ = nullptr;
      // Drop the callback: it is a strong reference from a native root, and
      // callbacks usually close over the object that holds this watcher, so
      // keeping it would keep that object, this wrapper and everything they
      // reach alive for ever (a leak per closed connection). A closed
      // watcher never calls back again. (Safe inside the callback itself:
      // the running function is held by its caller's handle scope.)
      cb_.Reset();
    }
    return info.Env().Undefined();
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&h_->poll));
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&h_->poll));
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (h_ != nullptr && active_) uv_poll_stop(&h_->poll);
    active_ = false;
    Unpin();
  }

  void Pin() {
    if (!pinned_) {
      Ref();
      pinned_ = true;
    }
  }

  void Unpin() {
    if (pinned_) {
      Unref();
      pinned_ = false;
    }
  }

  static void BeginClose(PollHandle* h) {
    h->owner = nullptr;
    if (h->closing) return;
    h->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&h->poll), OnClosed);
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* h = static_cast<PollHandle*>(handle->data);
    // Unregisters the teardown hook, or, if teardown already started it,
    // tells node this hook is finished.
    if (h->hook != nullptr) napi_remove_async_cleanup_hook(h->hook);
    delete h;
  }

  // Env is going away (worker exit / process exit) with the handle open.
  static void OnEnvTeardown(napi_async_cleanup_hook_handle, void* arg) {
    auto* h = static_cast<PollHandle*>(arg);
    if (FdWatcher* self = h->owner) {
      self->h_ = nullptr;
      self->active_ = false;
      self->pinned_ = false;  // the env's references are being dropped anyway
    }
    uv_poll_stop(&h->poll);
    BeginClose(h);
  }

  static void OnPoll(uv_poll_t* handle, int status, int /*events*/) {
    auto* h = static_cast<PollHandle*>(handle->data);
    FdWatcher* self = h->owner;
    if (self == nullptr || !self->active_) return;  // stopped/closed: stay silent

    Napi::Env env = self->Env();
    try {
      Napi::HandleScope scope(env);
      Napi::Object recv = self->Value();  // keeps the wrapper alive during the call
      if (status < 0) {
        // POLLERR: libuv has already stopped the handle. Mirror that state,
        // then still notify so JS reads the fd and sees the actual error.
        self->active_ = false;
        self->Unpin();
      }
      try {
        // MakeCallback (not Call): enters the async context and drains
        // process.nextTick/microtasks afterwards, as for any libuv callback.
        self->cb_.MakeCallback(recv, {}, *self->ctx_);
      } catch (const Napi::Error& e) {
        // We are at the top of a libuv callback: report it the way node
        // reports any uncaught exception ('uncaughtException' / worker 'error').
        napi_fatal_exception(env, e.Value());
      }
    } catch (...) {
      // The environment is being torn down (worker.terminate()): no JS can
      // run any more, so the event is dropped. An exception must not escape
      // a libuv callback: that would abort the whole process.
    }
  }

  PollHandle* h_ = nullptr;
  bool active_ = false;
  bool pinned_ = false;
  Napi::FunctionReference cb_;
  std::unique_ptr<Napi::AsyncContext> ctx_;
};

}  // namespace

void InitWatcher(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatcher", FdWatcher::Define(env));
}

}  // namespace zc
