#include "file-lock.h"

#include <sys/file.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "support.h"

namespace node_tss {

Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(U32Arg(info, 0, "fd", INT32_MAX));
  int r;
  do {
    r = flock(fd, LOCK_EX | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  int err = errno;
  Napi::Error e = Napi::Error::New(env, std::string("flock: ") + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

}  // namespace node_tss
