// Module init for zcswitch_native: each concern registers its own exports.
// No state lives here; all functions are safe to load in several envs
// (main thread + worker_threads), which Node-API modules must be.
#include <napi.h>

namespace zc {
void InitFd(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitWatcher(Napi::Env env, Napi::Object exports);
void InitUnixSocket(Napi::Env env, Napi::Object exports);
void InitTap(Napi::Env env, Napi::Object exports);
void InitGuard(Napi::Env env, Napi::Object exports);
}  // namespace zc

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  zc::InitFd(env, exports);
  zc::InitMemory(env, exports);
  zc::InitEventfd(env, exports);
  zc::InitWatcher(env, exports);
  zc::InitUnixSocket(env, exports);
  zc::InitTap(env, exports);
  zc::InitGuard(env, exports);
  return exports;
}

NODE_API_MODULE(zcswitch_native, Init)
