// lockFile(fd): flock(2), which Node.js does not offer, for the agent's state directory.
#pragma once

#include <napi.h>

namespace node_tss {

// lockFile(fd) -> true once this open file description holds an exclusive flock(2) on the
// file, false while another one holds it. Never blocks the event loop: the caller polls. The
// lock goes with the descriptor (closing it, or the process ending, releases it), so a crashed
// holder leaves no stale lock behind.
Napi::Value LockFile(const Napi::CallbackInfo& info);

}  // namespace node_tss
