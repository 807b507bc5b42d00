// A TCTI in front of the one Tss2_TctiLdr loads, bounding every exchange with the TPM by a
// deadline. tpm2-tss cannot do that itself: the synchronous ESAPI calls receive with
// TSS2_TCTI_TIMEOUT_BLOCK whatever Esys_SetTimeout says (the timeout only applies to the
// _Async/_Finish pairs), and the socket TCTIs (swtpm, mssim) block in recv() whatever timeout
// they are given. A TPM that stops answering would hold the call, and its libuv worker, forever.
//
// Each call into the inner TCTI runs on its own I/O thread while the caller waits at most the
// deadline. Past it the caller gets TSS2_TCTI_RC_IO_ERROR and the connection is given up
// ("expired"): every later call fails at once. The stuck I/O thread owns the inner TCTI until its
// call returns (if ever), and finalizes it then if the wrapper was finalized meanwhile, so
// nothing is freed under a thread that still uses it.
#pragma once

#include <tss2/tss2_tcti.h>

#include <cstdint>
#include <string>

namespace node_tss::deadline_tcti {

// Loads the TCTI `conf` names (Tss2_TctiLdr_Initialize, itself under the deadline) and wraps
// it. On success *out is the wrapper, to be freed with Finalize(); on failure *out is null and
// *timedOut says whether the loader overran the deadline.
TSS2_RC Open(const std::string& conf, uint32_t timeoutMs, TSS2_TCTI_CONTEXT** out, bool* timedOut);

// True once a call overran the deadline (the connection is given up).
bool Expired(TSS2_TCTI_CONTEXT* tcti);

// Frees the wrapper; the inner TCTI now, or when its stuck I/O thread returns.
void Finalize(TSS2_TCTI_CONTEXT** tcti);

}  // namespace node_tss::deadline_tcti
