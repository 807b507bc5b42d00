// Plumbing shared by every binding in tpm.cc: owning wrappers for what ESAPI hands out,
// Tss2_MU (un)marshalling to and from JS bytes, argument checks, and the Outcome a worker
// thread fills for the main thread. No TPM logic lives here.
#pragma once

#include <napi.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace node_tss {

using Bytes = std::vector<uint8_t>;

// What a call produced on the worker thread. Only plain C++ data: N-API may not be touched
// off the main thread, so the JS result is built from this in OnOK.
struct Outcome {
  TSS2_RC rc = TSS2_RC_SUCCESS;
  std::string command;  // the TSS function that failed; empty on success
  bool timedOut = false;  // the failure is the TPM not answering before the deadline
  std::vector<std::pair<const char*, Bytes>> bytes;
  std::vector<std::pair<const char*, double>> numbers;

  bool failed() const { return !command.empty(); }

  // Records `r` as the failure of `cmd`; true when it is one, so callers write
  // `if (CALL(out, Esys_X, ...)) return;`.
  bool Check(const char* cmd, TSS2_RC r) {
    if (r == TSS2_RC_SUCCESS) return false;
    rc = r;
    command = cmd;
    return true;
  }

  void Put(const char* key, const uint8_t* data, size_t size) { bytes.emplace_back(key, Bytes(data, data + size)); }
  void Put(const char* key, double value) { numbers.emplace_back(key, value); }
};

// Calls a TSS function and records a failure under its own name.
#define CALL(out, fn, ...) (out).Check(#fn, fn(__VA_ARGS__))

// An ESAPI out-pointer: every one is released with Esys_Free (tpm2-tss ESAPI spec §6.1).
template <typename T>
class EsysOut {
 public:
  EsysOut() = default;
  EsysOut(const EsysOut&) = delete;
  EsysOut& operator=(const EsysOut&) = delete;
  ~EsysOut() { Esys_Free(ptr_); }
  T** out() { return &ptr_; }
  const T& operator*() const { return *ptr_; }
  const T* operator->() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

// An ESYS_TR this call made for itself (a TPM handle it looked up, a policy session); the
// destructor gives it back, whether the call succeeded or not.
class ScopedTr {
 public:
  enum class Kind { Lookup, Session };
  ScopedTr(ESYS_CONTEXT* ctx, Kind kind) : ctx_(ctx), kind_(kind) {}
  ScopedTr(const ScopedTr&) = delete;
  ScopedTr& operator=(const ScopedTr&) = delete;
  ~ScopedTr() {
    if (tr_ == ESYS_TR_NONE) return;
    // A lookup only holds ESAPI metadata; a session also holds a TPM slot.
    if (kind_ == Kind::Session) Esys_FlushContext(ctx_, tr_);
    else Esys_TR_Close(ctx_, &tr_);
  }
  ESYS_TR* out() { return &tr_; }
  ESYS_TR get() const { return tr_; }

 private:
  ESYS_CONTEXT* ctx_;
  Kind kind_;
  ESYS_TR tr_ = ESYS_TR_NONE;
};

template <typename T>
using MarshalFn = TSS2_RC (*)(const T*, uint8_t*, size_t, size_t*);
template <typename T>
using UnmarshalFn = TSS2_RC (*)(const uint8_t*, size_t, size_t*, T*);

// Marshals `value` into out.bytes[key]; false (with the failure recorded) if Tss2_MU refuses.
template <typename T>
bool Marshal(Outcome& out, const char* fnName, MarshalFn<T> fn, const T& value, const char* key) {
  // A canonical encoding is never larger than the C structure, which reserves every maximum.
  Bytes buf(sizeof(T));
  size_t offset = 0;
  if (out.Check(fnName, fn(&value, buf.data(), buf.size(), &offset))) return false;
  buf.resize(offset);
  out.bytes.emplace_back(key, std::move(buf));
  return true;
}
#define MARSHAL(out, TYPE, value, key) \
  node_tss::Marshal<TYPE>(out, "Tss2_MU_" #TYPE "_Marshal", Tss2_MU_##TYPE##_Marshal, value, key)

// A rejection carrying the TSS return code and the function that returned it, and whether the
// TPM missed the deadline; the TS wrapper (src/agent/tss.ts) turns it into a TssError.
inline Napi::Error TssFailure(Napi::Env env, const std::string& command, TSS2_RC rc, bool timedOut = false) {
  Napi::Error e = Napi::Error::New(env, command + ": " + Tss2_RC_Decode(rc));
  e.Set("rc", Napi::Number::New(env, rc));
  e.Set("rcText", Napi::String::New(env, Tss2_RC_Decode(rc)));
  e.Set("command", Napi::String::New(env, command));
  if (timedOut) e.Set("timedOut", Napi::Boolean::New(env, true));
  return e;
}

inline Bytes BytesArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return Bytes(a.Data(), a.Data() + a.ByteLength());
}

inline uint32_t U32Arg(const Napi::CallbackInfo& info, size_t i, const char* what, uint32_t max = UINT32_MAX) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= max) || d != static_cast<double>(static_cast<uint32_t>(d))) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an integer in 0.." + std::to_string(max));
  }
  return static_cast<uint32_t>(d);
}

inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// Unmarshals a whole argument (no trailing bytes) on the main thread, before any TPM traffic.
template <typename T>
T Unmarshal(const Napi::CallbackInfo& info, size_t i, const char* what, const char* fnName, UnmarshalFn<T> fn) {
  Bytes in = BytesArg(info, i, what);
  T value{};
  size_t offset = 0;
  TSS2_RC rc = fn(in.data(), in.size(), &offset, &value);
  if (rc == TSS2_RC_SUCCESS && offset != in.size()) rc = TSS2_MU_RC_BAD_SIZE;
  if (rc != TSS2_RC_SUCCESS) throw TssFailure(info.Env(), fnName, rc);
  return value;
}
#define UNMARSHAL(info, i, TYPE) \
  node_tss::Unmarshal<TYPE>(info, i, #TYPE, "Tss2_MU_" #TYPE "_Unmarshal", Tss2_MU_##TYPE##_Unmarshal)

// Raw bytes into a TPM2B with a `buffer` member (TPM2B_DATA, TPM2B_DIGEST), size-checked.
template <typename T>
T Tpm2bArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Bytes in = BytesArg(info, i, what);
  T value{};
  if (in.size() > sizeof(value.buffer)) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " is longer than " + std::to_string(sizeof(value.buffer)) + " bytes");
  }
  value.size = static_cast<UINT16>(in.size());
  std::copy(in.begin(), in.end(), value.buffer);
  return value;
}

}  // namespace node_tss
