{
  # Thin Linux-only syscall layer for zcswitch (memfd, mmap, eventfd, uv_poll,
  # SCM_RIGHTS). C++ exceptions are enabled via node_addon_api_except so every
  # Napi::Error thrown in C++ surfaces as a JS exception without manual
  # IsExceptionPending() checks.
  'targets': [
    {
      'target_name': 'zcswitch_native',
      'sources': [
        'src/addon.cc',
        'src/fd.cc',
        'src/memory.cc',
        'src/eventfd.cc',
        'src/watcher.cc',
        'src/unix_socket.cc',
        'src/tap.cc',
        'src/guard.cc',
      ],
      'dependencies': [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
      ],
      'defines': [
        # 8 = napi_add_async_cleanup_hook (FdWatcher teardown in workers).
        'NAPI_VERSION=8',
        '_GNU_SOURCE',
        # A worker being terminated cannot take a JS exception: drop it rather
        # than let node-addon-api's rethrow abort the whole process.
        'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
      ],
      # node-gyp's common.gypi already selects -std=gnu++17 for Node 20.
      'cflags_cc': [ '-Wall', '-Wextra', '-Wno-unused-parameter' ],
    },
  ],
}
