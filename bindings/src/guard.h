// Guest-memory fault guard (guard.cc): survive SIGBUS in front-end mappings.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zc {
// Register [addr, addr+len) under `id`; installs the SIGBUS handler on first
// use. Returns the slot, or -1 when the table is full (errno = ENOSPC) or the
// handler cannot be installed (errno from sigaction).
int GuardRegister(void* addr, size_t len, int32_t id);
// Forget a slot (before the range is unmapped). A fault recorded for it and
// not yet taken is kept for takeMappingFaults(). No-op for slot < 0.
void GuardUnregister(int slot);
}  // namespace zc
