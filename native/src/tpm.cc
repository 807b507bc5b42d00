// node-tss: one NativeTpm object = one TCTI + one ESYS context. Every TPM call runs as an
// AsyncWorker on the libuv pool and settles a Promise. Arguments arrive as marshalled TPM
// structures (Uint8Array) or numbers and are unmarshalled with Tss2_MU on the main thread;
// results leave as marshalled bytes. Parsing and policy stay in TypeScript (src/tpm/).
//
// Calls on one object must not overlap (an ESYS context is not thread-safe): the TS wrapper
// queues them, and Run() refuses an overlapping call rather than racing.
#include <functional>

#include "deadline-tcti.h"
#include "file-lock.h"
#include "support.h"

namespace node_tss {
namespace {

constexpr ESYS_TR kNone = ESYS_TR_NONE;

// Hierarchy names as the TS API spells them -> ESAPI's fixed handles (empty auth assumed).
ESYS_TR Hierarchy(const Napi::CallbackInfo& info, size_t i) {
  std::string name = StringArg(info, i, "hierarchy");
  if (name == "owner") return ESYS_TR_RH_OWNER;
  if (name == "endorsement") return ESYS_TR_RH_ENDORSEMENT;
  if (name == "platform") return ESYS_TR_RH_PLATFORM;
  if (name == "null") return ESYS_TR_RH_NULL;
  throw Napi::TypeError::New(info.Env(), "hierarchy must be owner, endorsement, platform or null");
}

class NativeTpm;

// Runs `work` off the main thread; resolves with { ...numbers, ...bytes } or rejects with a
// TssFailure. Holds a reference to the NativeTpm so GC cannot finalize it mid-call.
class Job final : public Napi::AsyncWorker {
 public:
  using Work = std::function<void(Outcome&)>;

  // `tcti`: the context's deadline TCTI, to tell a missed deadline from other failures (null
  // for open(), which reports that itself).
  Job(Napi::Env env, Napi::ObjectReference owner, bool* busy, TSS2_TCTI_CONTEXT* tcti, Work work)
      : Napi::AsyncWorker(env, "node-tss"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(std::move(owner)),
        busy_(busy),
        tcti_(tcti),
        work_(std::move(work)) {
    *busy_ = true;
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    work_(outcome_);
    if (outcome_.failed() && tcti_ != nullptr && deadline_tcti::Expired(tcti_)) outcome_.timedOut = true;
  }

  void OnOK() override {
    *busy_ = false;
    Napi::Env env = Env();
    if (outcome_.failed()) {
      deferred_.Reject(TssFailure(env, outcome_.command, outcome_.rc, outcome_.timedOut).Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    for (const auto& [key, value] : outcome_.numbers) result.Set(key, Napi::Number::New(env, value));
    for (const auto& [key, value] : outcome_.bytes) result.Set(key, Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size()));
    deferred_.Resolve(result);
  }

  // Execute() threw a C++ exception (std::bad_alloc): the promise still settles.
  void OnError(const Napi::Error& e) override {
    *busy_ = false;
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;
  bool* busy_;
  TSS2_TCTI_CONTEXT* tcti_;
  Work work_;
  Outcome outcome_;
};

class NativeTpm final : public Napi::ObjectWrap<NativeTpm> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTpm",
                       {
                           InstanceMethod<&NativeTpm::Open>("open"),
                           InstanceMethod<&NativeTpm::Close>("close"),
                           InstanceMethod<&NativeTpm::GetCapability>("getCapability"),
                           InstanceMethod<&NativeTpm::GetRandom>("getRandom"),
                           InstanceMethod<&NativeTpm::FromTpmHandle>("fromTpmHandle"),
                           InstanceMethod<&NativeTpm::ReadPublic>("readPublic"),
                           InstanceMethod<&NativeTpm::NvReadPublic>("nvReadPublic"),
                           InstanceMethod<&NativeTpm::NvRead>("nvRead"),
                           InstanceMethod<&NativeTpm::CreatePrimary>("createPrimary"),
                           InstanceMethod<&NativeTpm::Create>("create"),
                           InstanceMethod<&NativeTpm::Load>("load"),
                           InstanceMethod<&NativeTpm::EvictControl>("evictControl"),
                           InstanceMethod<&NativeTpm::FlushContext>("flushContext"),
                           InstanceMethod<&NativeTpm::PcrRead>("pcrRead"),
                           InstanceMethod<&NativeTpm::PcrExtend>("pcrExtend"),
                           InstanceMethod<&NativeTpm::Quote>("quote"),
                           InstanceMethod<&NativeTpm::Certify>("certify"),
                           InstanceMethod<&NativeTpm::Sign>("sign"),
                           InstanceMethod<&NativeTpm::ActivateCredential>("activateCredential"),
                       });
  }

  explicit NativeTpm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTpm>(info) {}

  // The finalizer: frees what close() was not called on. No TPM traffic happens here.
  ~NativeTpm() override { Release(); }

 private:
  ESYS_CONTEXT* esys_ = nullptr;
  TSS2_TCTI_CONTEXT* tcti_ = nullptr;
  bool busy_ = false;

  void Release() {
    if (esys_ != nullptr) Esys_Finalize(&esys_);
    if (tcti_ != nullptr) deadline_tcti::Finalize(&tcti_);
  }

  // Queues `work` for this context. `needsContext` is false only for open().
  Napi::Value Run(const Napi::CallbackInfo& info, Job::Work work, bool needsContext = true) {
    Napi::Env env = info.Env();
    if (busy_) throw Napi::Error::New(env, "node-tss: calls on one TPM context must not overlap");
    if (needsContext && esys_ == nullptr) throw Napi::Error::New(env, "node-tss: the TPM context is not open");
    auto* job = new Job(env, Napi::Persistent(info.This().As<Napi::Object>()), &busy_, tcti_, std::move(work));
    Napi::Promise promise = job->Promise();
    job->Queue();
    return promise;
  }

  // open(tcti: string, timeoutMs): "name:conf" as tpm2-tools takes it; Tss2_TctiLdr parses it.
  // Every exchange with the TPM, from loading the TCTI on, must complete within timeoutMs
  // (see deadline-tcti.h); after one that does not, the context only fails.
  Napi::Value Open(const Napi::CallbackInfo& info) {
    std::string conf = StringArg(info, 0, "tcti");
    uint32_t timeoutMs = U32Arg(info, 1, "timeoutMs");
    if (timeoutMs == 0) throw Napi::TypeError::New(info.Env(), "timeoutMs must be at least 1");
    // While busy the context is being written by a worker: Run() refuses that case first.
    if (!busy_ && esys_ != nullptr) throw Napi::Error::New(info.Env(), "node-tss: already open");
    return Run(
        info,
        [this, conf, timeoutMs](Outcome& out) {
          TSS2_TCTI_CONTEXT* tcti = nullptr;
          bool timedOut = false;
          if (out.Check("Tss2_TctiLdr_Initialize", deadline_tcti::Open(conf, timeoutMs, &tcti, &timedOut))) {
            out.timedOut = timedOut;
            return;
          }
          ESYS_CONTEXT* esys = nullptr;
          if (CALL(out, Esys_Initialize, &esys, tcti, nullptr)) {
            out.timedOut = deadline_tcti::Expired(tcti);
            deadline_tcti::Finalize(&tcti);
            return;
          }
          tcti_ = tcti;
          esys_ = esys;
        },
        false);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (busy_) throw Napi::Error::New(info.Env(), "node-tss: close() while a call is running");
    Release();
    return info.Env().Undefined();
  }

  // getCapability(capability, property, count) -> { moreData, data: TPMS_CAPABILITY_DATA }
  Napi::Value GetCapability(const Napi::CallbackInfo& info) {
    uint32_t cap = U32Arg(info, 0, "capability"), prop = U32Arg(info, 1, "property"), count = U32Arg(info, 2, "count");
    return Run(info, [ctx = esys_, cap, prop, count](Outcome& out) {
      TPMI_YES_NO more = TPM2_NO;
      EsysOut<TPMS_CAPABILITY_DATA> data;
      if (CALL(out, Esys_GetCapability, ctx, kNone, kNone, kNone, cap, prop, count, &more, data.out())) return;
      out.Put("moreData", more);
      MARSHAL(out, TPMS_CAPABILITY_DATA, *data, "data");
    });
  }

  // getRandom(n) -> { bytes } (the TPM may return fewer than asked: at most one digest)
  Napi::Value GetRandom(const Napi::CallbackInfo& info) {
    auto n = static_cast<UINT16>(U32Arg(info, 0, "bytesRequested", UINT16_MAX));
    return Run(info, [ctx = esys_, n](Outcome& out) {
      EsysOut<TPM2B_DIGEST> random;
      if (CALL(out, Esys_GetRandom, ctx, kNone, kNone, kNone, n, random.out())) return;
      out.Put("bytes", random->buffer, random->size);
    });
  }

  // fromTpmHandle(tpmHandle) -> { handle }: an ESYS_TR for a persistent object or NV index.
  Napi::Value FromTpmHandle(const Napi::CallbackInfo& info) {
    uint32_t tpmHandle = U32Arg(info, 0, "tpmHandle");
    return Run(info, [ctx = esys_, tpmHandle](Outcome& out) {
      ESYS_TR tr = kNone;
      if (CALL(out, Esys_TR_FromTPMPublic, ctx, tpmHandle, kNone, kNone, kNone, &tr)) return;
      out.Put("handle", tr);
    });
  }

  // readPublic(handle) -> { public: TPM2B_PUBLIC, name }
  Napi::Value ReadPublic(const Napi::CallbackInfo& info) {
    ESYS_TR handle = U32Arg(info, 0, "handle");
    return Run(info, [ctx = esys_, handle](Outcome& out) {
      EsysOut<TPM2B_PUBLIC> pub;
      EsysOut<TPM2B_NAME> name, qualifiedName;
      if (CALL(out, Esys_ReadPublic, ctx, handle, kNone, kNone, kNone, pub.out(), name.out(), qualifiedName.out())) return;
      out.Put("name", name->name, name->size);
      MARSHAL(out, TPM2B_PUBLIC, *pub, "public");
    });
  }

  // nvReadPublic(nvIndex) -> { nvPublic: TPM2B_NV_PUBLIC, name }
  Napi::Value NvReadPublic(const Napi::CallbackInfo& info) {
    uint32_t index = U32Arg(info, 0, "nvIndex");
    return Run(info, [ctx = esys_, index](Outcome& out) {
      ScopedTr nv(ctx, ScopedTr::Kind::Lookup);
      if (CALL(out, Esys_TR_FromTPMPublic, ctx, index, kNone, kNone, kNone, nv.out())) return;
      EsysOut<TPM2B_NV_PUBLIC> pub;
      EsysOut<TPM2B_NAME> name;
      if (CALL(out, Esys_NV_ReadPublic, ctx, nv.get(), kNone, kNone, kNone, pub.out(), name.out())) return;
      out.Put("name", name->name, name->size);
      MARSHAL(out, TPM2B_NV_PUBLIC, *pub, "nvPublic");
    });
  }

  // nvRead(nvIndex, auth: hierarchy name | "index", size, offset) -> { data }: one chunk.
  Napi::Value NvRead(const Napi::CallbackInfo& info) {
    uint32_t index = U32Arg(info, 0, "nvIndex");
    bool indexAuth = info[1].IsString() && info[1].As<Napi::String>().Utf8Value() == "index";
    ESYS_TR authHierarchy = indexAuth ? kNone : Hierarchy(info, 1);
    auto size = static_cast<UINT16>(U32Arg(info, 2, "size", UINT16_MAX));
    auto offset = static_cast<UINT16>(U32Arg(info, 3, "offset", UINT16_MAX));
    return Run(info, [ctx = esys_, index, indexAuth, authHierarchy, size, offset](Outcome& out) {
      ScopedTr nv(ctx, ScopedTr::Kind::Lookup);
      if (CALL(out, Esys_TR_FromTPMPublic, ctx, index, kNone, kNone, kNone, nv.out())) return;
      EsysOut<TPM2B_MAX_NV_BUFFER> data;
      ESYS_TR auth = indexAuth ? nv.get() : authHierarchy;
      if (CALL(out, Esys_NV_Read, ctx, auth, nv.get(), ESYS_TR_PASSWORD, kNone, kNone, size, offset, data.out())) return;
      out.Put("data", data->buffer, data->size);
    });
  }

  // createPrimary(hierarchy, template: TPM2B_PUBLIC) -> { handle, public: TPM2B_PUBLIC }
  Napi::Value CreatePrimary(const Napi::CallbackInfo& info) {
    ESYS_TR hierarchy = Hierarchy(info, 0);
    TPM2B_PUBLIC tmpl = UNMARSHAL(info, 1, TPM2B_PUBLIC);
    return Run(info, [ctx = esys_, hierarchy, tmpl](Outcome& out) {
      TPM2B_SENSITIVE_CREATE sensitive{};
      TPM2B_DATA outsideInfo{};
      TPML_PCR_SELECTION creationPcr{};
      ESYS_TR handle = kNone;
      EsysOut<TPM2B_PUBLIC> pub;
      EsysOut<TPM2B_CREATION_DATA> creationData;
      EsysOut<TPM2B_DIGEST> creationHash;
      EsysOut<TPMT_TK_CREATION> creationTicket;
      if (CALL(out, Esys_CreatePrimary, ctx, hierarchy, ESYS_TR_PASSWORD, kNone, kNone, &sensitive, &tmpl,
               &outsideInfo, &creationPcr, &handle, pub.out(), creationData.out(), creationHash.out(),
               creationTicket.out())) {
        return;
      }
      out.Put("handle", handle);
      MARSHAL(out, TPM2B_PUBLIC, *pub, "public");
    });
  }

  // create(parent, template: TPM2B_PUBLIC) -> { private: TPM2B_PRIVATE, public: TPM2B_PUBLIC }
  Napi::Value Create(const Napi::CallbackInfo& info) {
    ESYS_TR parent = U32Arg(info, 0, "parent");
    TPM2B_PUBLIC tmpl = UNMARSHAL(info, 1, TPM2B_PUBLIC);
    return Run(info, [ctx = esys_, parent, tmpl](Outcome& out) {
      TPM2B_SENSITIVE_CREATE sensitive{};
      TPM2B_DATA outsideInfo{};
      TPML_PCR_SELECTION creationPcr{};
      EsysOut<TPM2B_PRIVATE> priv;
      EsysOut<TPM2B_PUBLIC> pub;
      EsysOut<TPM2B_CREATION_DATA> creationData;
      EsysOut<TPM2B_DIGEST> creationHash;
      EsysOut<TPMT_TK_CREATION> creationTicket;
      if (CALL(out, Esys_Create, ctx, parent, ESYS_TR_PASSWORD, kNone, kNone, &sensitive, &tmpl, &outsideInfo,
               &creationPcr, priv.out(), pub.out(), creationData.out(), creationHash.out(), creationTicket.out())) {
        return;
      }
      if (MARSHAL(out, TPM2B_PRIVATE, *priv, "private")) MARSHAL(out, TPM2B_PUBLIC, *pub, "public");
    });
  }

  // load(parent, private: TPM2B_PRIVATE, public: TPM2B_PUBLIC) -> { handle }
  Napi::Value Load(const Napi::CallbackInfo& info) {
    ESYS_TR parent = U32Arg(info, 0, "parent");
    TPM2B_PRIVATE priv = UNMARSHAL(info, 1, TPM2B_PRIVATE);
    TPM2B_PUBLIC pub = UNMARSHAL(info, 2, TPM2B_PUBLIC);
    return Run(info, [ctx = esys_, parent, priv, pub](Outcome& out) {
      ESYS_TR handle = kNone;
      if (CALL(out, Esys_Load, ctx, parent, ESYS_TR_PASSWORD, kNone, kNone, &priv, &pub, &handle)) return;
      out.Put("handle", handle);
    });
  }

  // evictControl(object, persistentHandle) -> { handle }: the persistent copy (owner auth), or
  // ESYS_TR_NONE when `object` was the persistent one and is now evicted.
  Napi::Value EvictControl(const Napi::CallbackInfo& info) {
    ESYS_TR object = U32Arg(info, 0, "handle");
    uint32_t persistent = U32Arg(info, 1, "persistentHandle");
    return Run(info, [ctx = esys_, object, persistent](Outcome& out) {
      ESYS_TR handle = kNone;
      if (CALL(out, Esys_EvictControl, ctx, ESYS_TR_RH_OWNER, object, ESYS_TR_PASSWORD, kNone, kNone, persistent,
               &handle)) {
        return;
      }
      out.Put("handle", handle);
    });
  }

  Napi::Value FlushContext(const Napi::CallbackInfo& info) {
    ESYS_TR handle = U32Arg(info, 0, "handle");
    return Run(info, [ctx = esys_, handle](Outcome& out) { CALL(out, Esys_FlushContext, ctx, handle); });
  }

  // pcrRead(selection: TPML_PCR_SELECTION) -> { updateCounter, selection: TPML_PCR_SELECTION,
  // digests: TPML_DIGEST }. The TPM answers at most 8 digests; the caller asks again for the rest.
  Napi::Value PcrRead(const Napi::CallbackInfo& info) {
    TPML_PCR_SELECTION selection = UNMARSHAL(info, 0, TPML_PCR_SELECTION);
    return Run(info, [ctx = esys_, selection](Outcome& out) {
      UINT32 counter = 0;
      EsysOut<TPML_PCR_SELECTION> selected;
      EsysOut<TPML_DIGEST> digests;
      if (CALL(out, Esys_PCR_Read, ctx, kNone, kNone, kNone, &selection, &counter, selected.out(), digests.out())) return;
      out.Put("updateCounter", counter);
      if (MARSHAL(out, TPML_PCR_SELECTION, *selected, "selection")) MARSHAL(out, TPML_DIGEST, *digests, "digests");
    });
  }

  // pcrExtend(pcr, digests: TPML_DIGEST_VALUES) -> {}
  Napi::Value PcrExtend(const Napi::CallbackInfo& info) {
    ESYS_TR pcr = ESYS_TR_PCR0 + U32Arg(info, 0, "pcr", ESYS_TR_PCR31 - ESYS_TR_PCR0);
    TPML_DIGEST_VALUES digests = UNMARSHAL(info, 1, TPML_DIGEST_VALUES);
    return Run(info, [ctx = esys_, pcr, digests](Outcome& out) {
      CALL(out, Esys_PCR_Extend, ctx, pcr, ESYS_TR_PASSWORD, kNone, kNone, &digests);
    });
  }

  // quote(signer, qualifyingData, selection: TPML_PCR_SELECTION, scheme: TPMT_SIG_SCHEME)
  //   -> { attest: TPMS_ATTEST, signature: TPMT_SIGNATURE }
  Napi::Value Quote(const Napi::CallbackInfo& info) {
    ESYS_TR signer = U32Arg(info, 0, "signer");
    TPM2B_DATA qualifying = Tpm2bArg<TPM2B_DATA>(info, 1, "qualifyingData");
    TPML_PCR_SELECTION selection = UNMARSHAL(info, 2, TPML_PCR_SELECTION);
    TPMT_SIG_SCHEME scheme = UNMARSHAL(info, 3, TPMT_SIG_SCHEME);
    return Run(info, [ctx = esys_, signer, qualifying, selection, scheme](Outcome& out) {
      EsysOut<TPM2B_ATTEST> attest;
      EsysOut<TPMT_SIGNATURE> signature;
      if (CALL(out, Esys_Quote, ctx, signer, ESYS_TR_PASSWORD, kNone, kNone, &qualifying, &scheme, &selection,
               attest.out(), signature.out())) {
        return;
      }
      out.Put("attest", attest->attestationData, attest->size);
      MARSHAL(out, TPMT_SIGNATURE, *signature, "signature");
    });
  }

  // certify(object, signer, qualifyingData, scheme: TPMT_SIG_SCHEME) -> { attest, signature }
  Napi::Value Certify(const Napi::CallbackInfo& info) {
    ESYS_TR object = U32Arg(info, 0, "object");
    ESYS_TR signer = U32Arg(info, 1, "signer");
    TPM2B_DATA qualifying = Tpm2bArg<TPM2B_DATA>(info, 2, "qualifyingData");
    TPMT_SIG_SCHEME scheme = UNMARSHAL(info, 3, TPMT_SIG_SCHEME);
    return Run(info, [ctx = esys_, object, signer, qualifying, scheme](Outcome& out) {
      EsysOut<TPM2B_ATTEST> attest;
      EsysOut<TPMT_SIGNATURE> signature;
      // Both handles authorize with their (empty) authValue: the object in the ADMIN role.
      if (CALL(out, Esys_Certify, ctx, object, signer, ESYS_TR_PASSWORD, ESYS_TR_PASSWORD, kNone, &qualifying,
               &scheme, attest.out(), signature.out())) {
        return;
      }
      out.Put("attest", attest->attestationData, attest->size);
      MARSHAL(out, TPMT_SIGNATURE, *signature, "signature");
    });
  }

  // sign(key, digest, scheme: TPMT_SIG_SCHEME) -> { signature: TPMT_SIGNATURE }. For keys that
  // are not restricted, so the hash-check ticket is the null ticket (Part 2 §10.7.6).
  Napi::Value Sign(const Napi::CallbackInfo& info) {
    ESYS_TR key = U32Arg(info, 0, "key");
    TPM2B_DIGEST digest = Tpm2bArg<TPM2B_DIGEST>(info, 1, "digest");
    TPMT_SIG_SCHEME scheme = UNMARSHAL(info, 2, TPMT_SIG_SCHEME);
    return Run(info, [ctx = esys_, key, digest, scheme](Outcome& out) {
      TPMT_TK_HASHCHECK validation{};
      validation.tag = TPM2_ST_HASHCHECK;
      validation.hierarchy = TPM2_RH_NULL;
      EsysOut<TPMT_SIGNATURE> signature;
      if (CALL(out, Esys_Sign, ctx, key, ESYS_TR_PASSWORD, kNone, kNone, &digest, &scheme, &validation,
               signature.out())) {
        return;
      }
      MARSHAL(out, TPMT_SIGNATURE, *signature, "signature");
    });
  }

  // activateCredential(activate, ek, credentialBlob: TPM2B_ID_OBJECT, secret: TPM2B_ENCRYPTED_SECRET)
  //   -> { secret }. The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential
  //   Profile 2.0 §B.6), so its authorization is a policy session satisfied here.
  Napi::Value ActivateCredential(const Napi::CallbackInfo& info) {
    ESYS_TR activate = U32Arg(info, 0, "activateHandle");
    ESYS_TR ek = U32Arg(info, 1, "ekHandle");
    TPM2B_ID_OBJECT blob = UNMARSHAL(info, 2, TPM2B_ID_OBJECT);
    TPM2B_ENCRYPTED_SECRET secret = UNMARSHAL(info, 3, TPM2B_ENCRYPTED_SECRET);
    return Run(info, [ctx = esys_, activate, ek, blob, secret](Outcome& out) {
      ScopedTr session(ctx, ScopedTr::Kind::Session);
      TPMT_SYM_DEF noSymmetric{};
      noSymmetric.algorithm = TPM2_ALG_NULL;
      if (CALL(out, Esys_StartAuthSession, ctx, kNone, kNone, kNone, kNone, kNone, nullptr, TPM2_SE_POLICY,
               &noSymmetric, TPM2_ALG_SHA256, session.out())) {
        return;
      }
      // Keep the session alive after use so the scoped flush always owns its end.
      if (CALL(out, Esys_TRSess_SetAttributes, ctx, session.get(), TPMA_SESSION_CONTINUESESSION, 0xff)) return;
      EsysOut<TPM2B_TIMEOUT> timeout;
      EsysOut<TPMT_TK_AUTH> ticket;
      if (CALL(out, Esys_PolicySecret, ctx, ESYS_TR_RH_ENDORSEMENT, session.get(), ESYS_TR_PASSWORD, kNone, kNone,
               nullptr, nullptr, nullptr, 0, timeout.out(), ticket.out())) {
        return;
      }
      EsysOut<TPM2B_DIGEST> certInfo;
      if (CALL(out, Esys_ActivateCredential, ctx, activate, ek, ESYS_TR_PASSWORD, session.get(), kNone, &blob,
               &secret, certInfo.out())) {
        return;
      }
      out.Put("secret", certInfo->buffer, certInfo->size);
    });
  }
};

}  // namespace
}  // namespace node_tss

static Napi::Object InitNodeTss(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTpm", node_tss::NativeTpm::Define(env));
  exports.Set("lockFile", Napi::Function::New(env, node_tss::LockFile, "lockFile"));
  return exports;
}

NODE_API_MODULE(node_tss, InitNodeTss)
