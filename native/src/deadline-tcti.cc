#include "deadline-tcti.h"

#include <tss2/tss2_tctildr.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace node_tss::deadline_tcti {
namespace {

// Identifies this TCTI's contexts; tpm2-tss only requires it to differ from the others'.
constexpr uint64_t kMagic = 0x6e6f64652d747373ULL;  // "node-tss"

// What the wrapper and its I/O threads share; every field is guarded by `mutex`, except
// `inner`, which only a busy I/O thread writes (and only one of them runs at a time).
struct Link {
  std::mutex mutex;
  std::condition_variable settled;
  TSS2_TCTI_CONTEXT* inner = nullptr;
  bool busy = false;      // an I/O thread is inside `inner`
  bool expired = false;   // a call overran the deadline: `inner` is given up
  bool released = false;  // the wrapper was finalized while busy: the I/O thread finalizes `inner`
};

struct Wrapper {
  TSS2_TCTI_CONTEXT_COMMON_V2 common;  // first: tpm2-tss calls through these pointers
  std::shared_ptr<Link> link;
  std::chrono::milliseconds timeout{0};
};

Wrapper* Cast(TSS2_TCTI_CONTEXT* tcti) { return reinterpret_cast<Wrapper*>(tcti); }

// Runs `call(link)` on its own I/O thread and waits for it until the deadline. Exceptions must
// not cross back into tpm2-tss, so a thread that cannot start is a general failure.
template <typename Call>
TSS2_RC Bounded(TSS2_TCTI_CONTEXT* tcti, Call call) {
  if (tcti == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
  Wrapper* w = Cast(tcti);
  std::shared_ptr<Link> link = w->link;
  std::unique_lock<std::mutex> lock(link->mutex);
  if (link->expired) return TSS2_TCTI_RC_IO_ERROR;
  std::shared_ptr<std::optional<TSS2_RC>> result;
  try {
    result = std::make_shared<std::optional<TSS2_RC>>();
    link->busy = true;
    std::thread([link, result, call = std::move(call)]() mutable {
      TSS2_RC rc = call(*link);
      std::lock_guard<std::mutex> guard(link->mutex);
      link->busy = false;
      *result = rc;
      if (link->released && link->inner != nullptr) Tss2_TctiLdr_Finalize(&link->inner);
      link->settled.notify_all();
    }).detach();
  } catch (...) {
    link->busy = false;
    return TSS2_TCTI_RC_GENERAL_FAILURE;
  }
  if (!link->settled.wait_for(lock, w->timeout, [&] { return result->has_value(); })) {
    link->expired = true;
    return TSS2_TCTI_RC_IO_ERROR;
  }
  return **result;
}

TSS2_RC Transmit(TSS2_TCTI_CONTEXT* tcti, size_t size, const uint8_t* command) {
  if (command == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
  // The I/O thread sends its own copy: the caller's buffer may be gone when a stuck call returns.
  auto copy = std::make_shared<std::vector<uint8_t>>(command, command + size);
  return Bounded(tcti, [copy](Link& link) { return Tss2_Tcti_Transmit(link.inner, copy->size(), copy->data()); });
}

TSS2_RC Receive(TSS2_TCTI_CONTEXT* tcti, size_t* size, uint8_t* response, int32_t timeout) {
  if (size == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
  // Likewise the I/O thread receives into its own buffer, copied out only once it has returned.
  struct Reply {
    size_t size;
    std::vector<uint8_t> bytes;
  };
  auto reply = std::make_shared<Reply>(Reply{*size, std::vector<uint8_t>(response == nullptr ? 0 : *size)});
  const bool wantBytes = response != nullptr;
  TSS2_RC rc = Bounded(tcti, [reply, wantBytes, timeout](Link& link) {
    return Tss2_Tcti_Receive(link.inner, &reply->size, wantBytes ? reply->bytes.data() : nullptr, timeout);
  });
  // Both outcomes come from an I/O thread that has returned (a missed deadline is an IO error).
  if (rc == TSS2_RC_SUCCESS || rc == TSS2_TCTI_RC_INSUFFICIENT_BUFFER) {
    if (rc == TSS2_RC_SUCCESS && wantBytes) std::memcpy(response, reply->bytes.data(), reply->size);
    *size = reply->size;
  }
  return rc;
}

TSS2_RC Cancel(TSS2_TCTI_CONTEXT* tcti) {
  return Bounded(tcti, [](Link& link) { return Tss2_Tcti_Cancel(link.inner); });
}

// Poll handles and sticky handles serve ESYS's asynchronous and resource-manager modes, which
// this addon does not use; they are refused rather than passed to an I/O thread that could
// still write through the caller's pointers after a deadline.
TSS2_RC GetPollHandles(TSS2_TCTI_CONTEXT*, TSS2_TCTI_POLL_HANDLE*, size_t*) { return TSS2_TCTI_RC_NOT_IMPLEMENTED; }

TSS2_RC SetLocality(TSS2_TCTI_CONTEXT* tcti, uint8_t locality) {
  return Bounded(tcti, [locality](Link& link) { return Tss2_Tcti_SetLocality(link.inner, locality); });
}

TSS2_RC MakeSticky(TSS2_TCTI_CONTEXT*, TPM2_HANDLE*, uint8_t) { return TSS2_TCTI_RC_NOT_IMPLEMENTED; }

void Release(Wrapper* w) {
  {
    std::lock_guard<std::mutex> guard(w->link->mutex);
    if (w->link->busy) {
      w->link->released = true;
    } else if (w->link->inner != nullptr) {
      Tss2_TctiLdr_Finalize(&w->link->inner);
    }
  }
  delete w;
}

void FinalizeCallback(TSS2_TCTI_CONTEXT* tcti) {
  if (tcti != nullptr) Release(Cast(tcti));
}

}  // namespace

TSS2_RC Open(const std::string& conf, uint32_t timeoutMs, TSS2_TCTI_CONTEXT** out, bool* timedOut) {
  *out = nullptr;
  *timedOut = false;
  Wrapper* w;
  try {
    w = new Wrapper();
    w->link = std::make_shared<Link>();
  } catch (...) {
    return TSS2_TCTI_RC_MEMORY;
  }
  w->timeout = std::chrono::milliseconds(timeoutMs);
  TSS2_TCTI_CONTEXT_COMMON_V1& v1 = w->common.v1;
  v1.magic = kMagic;
  v1.version = 2;
  v1.transmit = Transmit;
  v1.receive = Receive;
  v1.finalize = FinalizeCallback;
  v1.cancel = Cancel;
  v1.getPollHandles = GetPollHandles;
  v1.setLocality = SetLocality;
  w->common.makeSticky = MakeSticky;
  auto* tcti = reinterpret_cast<TSS2_TCTI_CONTEXT*>(w);
  TSS2_RC rc = Bounded(tcti, [conf](Link& link) {
    TSS2_TCTI_CONTEXT* loaded = nullptr;
    TSS2_RC r = Tss2_TctiLdr_Initialize(conf.c_str(), &loaded);
    if (r == TSS2_RC_SUCCESS) link.inner = loaded;
    return r;
  });
  if (rc != TSS2_RC_SUCCESS) {
    *timedOut = Expired(tcti);
    Release(w);
    return rc;
  }
  *out = tcti;
  return TSS2_RC_SUCCESS;
}

bool Expired(TSS2_TCTI_CONTEXT* tcti) {
  Wrapper* w = Cast(tcti);
  std::lock_guard<std::mutex> guard(w->link->mutex);
  return w->link->expired;
}

void Finalize(TSS2_TCTI_CONTEXT** tcti) {
  FinalizeCallback(*tcti);
  *tcti = nullptr;
}

}  // namespace node_tss::deadline_tcti
