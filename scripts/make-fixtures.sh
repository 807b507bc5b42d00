#!/usr/bin/env bash
# Regenerates the committed swtpm fixtures in fixtures/swtpm/ (see fixtures/swtpm/README.md):
# EK + EK certificate, AK, a quote and TPM2_Certify evidence for an RSA, an RSAPSS and an ECC
# attestation key, from a fresh software TPM. Everything (TPM state, local CA, ports) lives in a
# temp dir, so nothing global is read or changed. Deterministic apart from key material, clock
# and certificate dates; each run replaces the previous output. Usage: npm run fixtures
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR="$ROOT/fixtures/swtpm"

# Fixed inputs, documented in fixtures/swtpm/README.md and recorded in manifest.json.
NONCE_TEXT='attestor fixture nonce'
CERTIFY_TEXT='attestor fixture certify'
PCR_SELECTION='sha256:0,1,2,3,16,23+sha1:16,23'
EXTENDED_PCRS=(16 23)
AK_HANDLE=0x81000100 # persistent handles used only while sending the raw TPM2_Certify
KEY_HANDLE=0x81000101

die() { echo "make-fixtures: $*" >&2; exit 1; }

for tool in swtpm swtpm_setup swtpm_localca tpm2_createek tpm2_createak tpm2_quote tpm2_checkquote \
  tpm2_send tpm2_print tpm2_nvread tpm2_verifysignature openssl node sha1sum sha256sum od; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (run scripts/bootstrap.sh)"
done

WORK=$(mktemp -d)
SWTPM_PID=''
cleanup() {
  if [[ -n $SWTPM_PID ]]; then
    kill "$SWTPM_PID" 2>/dev/null || true
    wait "$SWTPM_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- byte functions (hex strings <-> files) ------------------------------------------------------
hex_of_file() { od -An -v -tx1 "$1" | tr -d ' \n'; }
hex_bytes() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; } # hex string -> bytes on stdout
write_hex() { hex_bytes "$1" >"$2"; }
sha256_text() { printf %s "$1" | sha256sum | cut -c1-64; }
sha1_text() { printf %s "$1" | sha1sum | cut -c1-40; }
# PCR value after one extend from its reset value (all zero): H(zeros || digest).
extended_from_zero() {
  local alg=$1 digest=$2 zeros
  zeros=$(printf '0%.0s' $(seq 1 ${#digest}))
  hex_bytes "$zeros$digest" | "${alg}sum" | cut -d' ' -f1
}

# Runs a command quietly; its output is shown if it fails.
run() {
  if ! "$@" >"$WORK/run.log" 2>&1; then
    cat "$WORK/run.log" >&2
    die "failed: $*"
  fi
}

# Runs a tpm2-tools command, then flushes what it left loaded: swtpm is used without a resource
# manager, so transient objects and sessions stay in the TPM's few slots until flushed.
tpm() {
  run "$@"
  tpm2_flushcontext -t && tpm2_flushcontext -l && tpm2_flushcontext -s
}

# --- a fresh swtpm with its own local CA ------------------------------------------------------
setup_swtpm() {
  mkdir -p "$WORK/state" "$WORK/ca" "$WORK/tmp"
  export TMPDIR="$WORK/tmp" # swtpm_setup writes its scratch certificates there
  cat >"$WORK/swtpm-localca.conf" <<EOF
statedir = $WORK/ca
signingkey = $WORK/ca/signkey.pem
issuercert = $WORK/ca/issuercert.pem
certserial = $WORK/ca/certserial
EOF
  : >"$WORK/swtpm-localca.options"
  cat >"$WORK/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $WORK/swtpm-localca.conf
create_certs_tool_options = $WORK/swtpm-localca.options
active_pcr_banks = sha1,sha256
EOF
  swtpm_setup --tpm2 --tpmstate "$WORK/state" --create-ek-cert --pcr-banks sha1,sha256 \
    --config "$WORK/swtpm_setup.conf" --logfile "$WORK/swtpm_setup.log" >/dev/null 2>&1 \
    || { cat "$WORK/swtpm_setup.log" >&2; die "swtpm_setup failed"; }
}

# Prints a port P such that P and P+1 (server and control channel) are both free right now.
free_port_pair() {
  node -e '
    const net = require("node:net");
    const listen = (port) => new Promise((ok, fail) => {
      const s = net.createServer().once("error", fail);
      s.listen(port, "127.0.0.1", () => ok(s));
    });
    (async () => {
      for (;;) {
        const a = await listen(0);
        const port = a.address().port;
        const b = await listen(port + 1).catch(() => null);
        a.close(); if (b) { b.close(); console.log(port); return; }
      }
    })();'
}

start_swtpm() {
  local attempt port
  for attempt in 1 2 3 4 5; do
    port=$(free_port_pair)
    swtpm socket --tpm2 --tpmstate dir="$WORK/state" \
      --server type=tcp,port="$port",bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
      --flags not-need-init,startup-clear >"$WORK/swtpm.log" 2>&1 &
    SWTPM_PID=$!
    export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
    for _ in $(seq 1 50); do
      kill -0 "$SWTPM_PID" 2>/dev/null || break # lost the port race: try another pair
      if tpm2_pcrread sha256:0 >/dev/null 2>&1; then return 0; fi
      sleep 0.1
    done
    kill "$SWTPM_PID" 2>/dev/null || true
    wait "$SWTPM_PID" 2>/dev/null || true
    SWTPM_PID=''
  done
  cat "$WORK/swtpm.log" >&2
  die "swtpm did not start"
}

# --- PCRs ------------------------------------------------------------------------------------
# Extends PCR 16 and 23 once in both banks with SHA-x("attestor fixture pcr<N>"), checks the
# result against the value computed here, and records every selected PCR for the manifest.
declare -A PCR_VALUE EXTEND_DIGEST
extend_pcrs() {
  local pcr alg digest expected
  for pcr in "${EXTENDED_PCRS[@]}"; do
    EXTEND_DIGEST[sha1:$pcr]=$(sha1_text "attestor fixture pcr$pcr")
    EXTEND_DIGEST[sha256:$pcr]=$(sha256_text "attestor fixture pcr$pcr")
    tpm tpm2_pcrextend "$pcr:sha1=${EXTEND_DIGEST[sha1:$pcr]},sha256=${EXTEND_DIGEST[sha256:$pcr]}"
  done
  for alg in sha256 sha1; do
    for pcr in $(selected_pcrs "$alg"); do
      tpm tpm2_pcrread "$alg:$pcr" -o "$WORK/pcr.bin"
      PCR_VALUE[$alg:$pcr]=$(hex_of_file "$WORK/pcr.bin")
    done
    for pcr in "${EXTENDED_PCRS[@]}"; do
      expected=$(extended_from_zero "$alg" "${EXTEND_DIGEST[$alg:$pcr]}")
      [[ ${PCR_VALUE[$alg:$pcr]} == "$expected" ]] || die "PCR $alg:$pcr is not the expected extend"
    done
  done
}

# PCR indexes of one bank in PCR_SELECTION, space separated.
selected_pcrs() {
  local part
  for part in ${PCR_SELECTION//+/ }; do
    if [[ ${part%%:*} == "$1" ]]; then echo "${part#*:}" | tr ',' ' '; fi
  done
}

# pcrDigest a quote over PCR_SELECTION must carry: SHA-256 of the selected values, banks in
# selection order, indexes ascending (TPM 2.0 Part 3, TPM2_Quote).
expected_pcr_digest() {
  local part alg pcr values=''
  for part in ${PCR_SELECTION//+/ }; do
    alg=${part%%:*}
    for pcr in $(selected_pcrs "$alg"); do values+=${PCR_VALUE[$alg:$pcr]}; done
  done
  hex_bytes "$values" | sha256sum | cut -c1-64
}

# --- EK ----------------------------------------------------------------------------------------
# swtpm_setup 0.7.1 certifies an RSA 2048 EK (0x01c00002) and an ECC NIST P-384 EK (0x01c00016),
# but no ECC P-256 EK. Issue one with the same local CA, the same way swtpm_setup calls
# swtpm_localca, and provision it at the TCG low-range index 0x01c0000a as a manufacturer would.
provision_p256_ek_cert() {
  local x y
  tpm tpm2_createek -G ecc -u "$WORK/ek-p256.pub" -c "$WORK/ek-p256.ctx"
  x=$(tpm2_print -t TPM2B_PUBLIC "$WORK/ek-p256.pub" | sed -n 's/^x: //p')
  y=$(tpm2_print -t TPM2B_PUBLIC "$WORK/ek-p256.pub" | sed -n 's/^y: //p')
  mkdir -p "$WORK/ek-p256-cert"
  run swtpm_localca --type ek --ek "x=$x,y=$y,id=secp256r1" --dir "$WORK/ek-p256-cert" \
    --tpm-spec-family 2.0 --tpm-spec-level 0 --tpm-spec-revision 164 \
    --tpm-manufacturer id:00001014 --tpm-model swtpm --tpm-version id:20191023 --tpm2 \
    --configfile "$WORK/swtpm-localca.conf" --optsfile "$WORK/swtpm-localca.options"
  tpm tpm2_nvdefine 0x01c0000a -C p -s "$(stat -c %s "$WORK/ek-p256-cert/ek.cert")" \
    -a 'ppwrite|writedefine|ppread|ownerread|authread|no_da|platformcreate'
  tpm tpm2_nvwrite 0x01c0000a -C p -i "$WORK/ek-p256-cert/ek.cert"
}

# Writes DIR/ek.pub and DIR/ek-cert.der, and checks that the certificate chains to the local CA
# and certifies exactly this EK.
make_ek() {
  local dir=$1 alg=$2 index=$3
  tpm tpm2_createek -G "$alg" -u "$dir/ek.pub" -c "$WORK/ek.ctx"
  tpm tpm2_nvread "$index" -C o -o "$dir/ek-cert.der"
  tpm tpm2_readpublic -c "$WORK/ek.ctx" -f pem -o "$WORK/ek.pem"
  openssl x509 -inform der -in "$dir/ek-cert.der" -out "$WORK/ek-cert.pem"
  openssl verify -CAfile "$OUT/ca-root.pem" -untrusted "$OUT/ca-intermediate.pem" \
    "$WORK/ek-cert.pem" >/dev/null || die "$dir/ek-cert.der does not chain to the local CA"
  [[ $(openssl x509 -in "$WORK/ek-cert.pem" -noout -pubkey) == "$(cat "$WORK/ek.pem")" ]] \
    || die "$dir/ek-cert.der does not certify $dir/ek.pub"
}

# --- AK and quote ------------------------------------------------------------------------------
make_ak() {
  local dir=$1 alg=$2 scheme=$3
  tpm tpm2_createak -C "$WORK/ek.ctx" -c "$WORK/ak.ctx" -G "$alg" -g sha256 -s "$scheme" \
    -u "$dir/ak.pub" -n "$dir/ak.name"
  tpm tpm2_readpublic -c "$WORK/ak.ctx" -f pem -o "$dir/ak.pem"
}

make_quote() {
  local dir=$1 scheme=$2 nonce msg_hex
  nonce=$(sha256_text "$NONCE_TEXT")
  echo "$nonce" >"$dir/nonce.hex"
  tpm tpm2_quote -c "$WORK/ak.ctx" -l "$PCR_SELECTION" -q "$nonce" -g sha256 --scheme "$scheme" \
    -m "$dir/quote.msg" -s "$dir/quote.sig" -o "$dir/quote.pcrs"
  msg_hex=$(hex_of_file "$dir/quote.msg")
  # TPMS_QUOTE_INFO ends with pcrDigest (TPM2B_DIGEST, 32 bytes for SHA-256).
  [[ ${msg_hex: -64} == "$(expected_pcr_digest)" ]] || die "$dir/quote.msg: unexpected pcrDigest"
  [[ $msg_hex == *"0020$nonce"* ]] || die "$dir/quote.msg: nonce not in extraData"
  if [[ $scheme == rsapss ]]; then
    # tpm2_checkquote 5.4 verifies RSA signatures as PKCS#1 v1.5 only, so check the RSASSA-PSS
    # signature (TPMT_SIGNATURE: sigAlg, hash, TPM2B size, then the signature) with OpenSSL;
    # the TPM uses a salt as long as the digest.
    tail -c +7 "$dir/quote.sig" >"$WORK/quote.sig.raw"
    openssl dgst -sha256 -verify "$dir/ak.pem" -sigopt rsa_padding_mode:pss \
      -sigopt rsa_pss_saltlen:32 -signature "$WORK/quote.sig.raw" "$dir/quote.msg" >/dev/null \
      || die "$dir/quote.sig does not verify"
  else
    tpm tpm2_checkquote -u "$dir/ak.pub" -m "$dir/quote.msg" -s "$dir/quote.sig" \
      -f "$dir/quote.pcrs" -g sha256 -q "$nonce"
  fi
}

# --- certified keys ----------------------------------------------------------------------------
make_srk() {
  tpm tpm2_createprimary -C o -g sha256 -G ecc256 -c "$WORK/srk.ctx"
}

# Creates an ECC P-256 signing key under the SRK: DIR/PREFIX.{pub,name,pem}, with attributes
# ATTRS and optional authPolicy file.
make_key() {
  local dir=$1 prefix=$2 attrs=$3 policy=${4:-}
  tpm tpm2_create -C "$WORK/srk.ctx" -G ecc256 -g sha256 -a "$attrs" ${policy:+-L "$policy"} \
    -u "$dir/$prefix.pub" -r "$WORK/$prefix.priv"
  tpm tpm2_load -C "$WORK/srk.ctx" -u "$dir/$prefix.pub" -r "$WORK/$prefix.priv" \
    -c "$WORK/$prefix.ctx" -n "$dir/$prefix.name"
  tpm tpm2_readpublic -c "$WORK/$prefix.ctx" -f pem -o "$dir/$prefix.pem"
}

# tpm2_certify 5.4 has no option for qualifying data, so TPM2_Certify (TPM 2.0 Part 3, 18.2) is
# sent raw with tpm2_send: both objects made persistent, two password sessions with empty auth,
# qualifyingData, inScheme TPM_ALG_NULL (the AK's own scheme). Writes the TPMS_ATTEST and the
# TPMT_SIGNATURE from the response, then checks them.
certify() {
  local dir=$1 key=$2 out=$3 qualifying=$4 pw cmd resp tag rc param_size attest_size attest
  tpm tpm2_evictcontrol -C o -c "$WORK/ak.ctx" "$AK_HANDLE"
  tpm tpm2_evictcontrol -C o -c "$WORK/$key.ctx" "$KEY_HANDLE"
  pw=400000090000000000 # TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, attributes 0, empty hmac
  cmd="00000148${KEY_HANDLE#0x}${AK_HANDLE#0x}00000012${pw}${pw}0020${qualifying}0010"
  cmd="8002$(printf '%08x' $((${#cmd} / 2 + 6)))$cmd"
  write_hex "$cmd" "$WORK/certify.cmd"
  tpm tpm2_send -o "$WORK/certify.resp" <"$WORK/certify.cmd"
  tpm tpm2_evictcontrol -C o -c "$AK_HANDLE"
  tpm tpm2_evictcontrol -C o -c "$KEY_HANDLE"
  # Response: tag, size, responseCode, parameterSize, TPM2B_ATTEST, TPMT_SIGNATURE, sessions.
  resp=$(hex_of_file "$WORK/certify.resp")
  tag=${resp:0:4} rc=${resp:12:8}
  [[ $tag == 8002 && $rc == 00000000 ]] || die "TPM2_Certify failed: response $resp"
  param_size=$((16#${resp:20:8})) attest_size=$((16#${resp:28:4}))
  attest=${resp:32:attest_size*2}
  write_hex "$attest" "$dir/$out.msg"
  write_hex "${resp:32+attest_size*2:(param_size-2-attest_size)*2}" "$dir/$out.sig"
  # TPMS_ATTEST: TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, ..., extraData, ..., certified Name.
  [[ ${attest:0:12} == ff5443478017 ]] || die "$dir/$out.msg is not a certify attestation"
  [[ $attest == *"0020$qualifying"* ]] || die "$dir/$out.msg: qualifying data missing"
  [[ $attest == *"0022$(hex_of_file "$dir/$key.name")"* ]] || die "$dir/$out.msg: wrong Name"
  tpm tpm2_verifysignature -c "$WORK/ak.ctx" -g sha256 -m "$dir/$out.msg" -s "$dir/$out.sig" \
    -t "$WORK/ticket"
}

# Duplicable key: fixedTPM and fixedParent clear, authPolicy = PolicyCommandCode(Duplicate), so
# TPM2_Duplicate really can move it. Certify still signs it; a verifier must refuse it.
make_dup_policy() {
  run tpm2_startauthsession -S "$WORK/trial.ctx"
  run tpm2_policycommandcode -S "$WORK/trial.ctx" -L "$WORK/dup.policy" TPM2_CC_Duplicate
  tpm tpm2_flushcontext "$WORK/trial.ctx"
}

# --- one directory per AK kind -----------------------------------------------------------------
# The one description of the output directories; both the generation and the manifest read it.
DIRS=(rsa rsapss ecc)
declare -A EK_ALG=([rsa]=rsa [rsapss]=rsa [ecc]=ecc)
declare -A EK_INDEX=([rsa]=0x01c00002 [rsapss]=0x01c00002 [ecc]=0x01c0000a)
declare -A AK_ALG=([rsa]=rsa [rsapss]=rsa [ecc]=ecc) # tpm2-tools: rsa = RSA 2048, ecc = NIST P-256
declare -A AK_SCHEME=([rsa]=rsassa [rsapss]=rsapss [ecc]=ecdsa)
declare -A CERTIFIES=([rsa]=yes [ecc]=yes)     # key.* + certify.*
declare -A CERTIFIES_DUP=([ecc]=yes)           # dup-key.* + dup-certify.*
KEY_ATTRS='fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign'
DUP_KEY_ATTRS='sensitivedataorigin|userwithauth|sign'

make_dir() {
  local name=$1 dir="$OUT/$1" qualifying
  qualifying=$(sha256_text "$CERTIFY_TEXT")
  mkdir -p "$dir"
  make_ek "$dir" "${EK_ALG[$name]}" "${EK_INDEX[$name]}"
  make_ak "$dir" "${AK_ALG[$name]}" "${AK_SCHEME[$name]}"
  make_quote "$dir" "${AK_SCHEME[$name]}"
  if [[ -n ${CERTIFIES[$name]:-} ]]; then
    make_key "$dir" key "$KEY_ATTRS"
    certify "$dir" key certify "$qualifying"
  fi
  if [[ -n ${CERTIFIES_DUP[$name]:-} ]]; then
    make_key "$dir" dup-key "$DUP_KEY_ATTRS" "$WORK/dup.policy"
    certify "$dir" dup-key dup-certify "$qualifying"
  fi
}

# --- manifest (JSON written by hand: every value is hex, a number or a fixed word) -------------
json_size() { # key algorithm as tpm2-tools names it
  if [[ $1 == rsa ]]; then printf '"bits": 2048'; else printf '"curve": "P-256"'; fi
}

json_list() { # the lines of stdin joined by ", "
  sed '$!s/$/,/' | paste -sd' ' -
}

json_pcr_bank() {
  local alg=$1 pcr
  printf '{ %s }' "$(for pcr in $(selected_pcrs "$alg"); do
    printf '"%s": "%s"\n' "$pcr" "${PCR_VALUE[$alg:$pcr]}"; done | json_list)"
}

json_selection() {
  local part
  printf '[%s]' "$(for part in ${PCR_SELECTION//+/ }; do
    printf '{ "hash": "%s", "pcrs": [%s] }\n' "${part%%:*}" "${part#*:}"; done | json_list)"
}

json_extends() {
  local pcr alg sep=''
  for pcr in "${EXTENDED_PCRS[@]}"; do
    for alg in sha1 sha256; do
      printf '%s\n    { "pcr": %s, "hash": "%s", "input": "attestor fixture pcr%s", "digest": "%s" }' \
        "$sep" "$pcr" "$alg" "$pcr" "${EXTEND_DIGEST[$alg:$pcr]}"
      sep=','
    done
  done
}

json_object_files() { # dir prefix: the .pub/.pem/.name triple and the Name in hex
  printf '"pub": "%s/%s.pub", "pem": "%s/%s.pem", "name": "%s/%s.name", "nameHex": "%s"' \
    "$1" "$2" "$1" "$2" "$1" "$2" "$(hex_of_file "$OUT/$1/$2.name")"
}

json_certify() { # dir key-prefix out-prefix key-attributes expect
  printf '{\n        "key": { "type": "ecc", %s, "attributes": "%s", %s },\n' \
    "$(json_size ecc)" "$4" "$(json_object_files "$1" "$2")"
  printf '        "msg": "%s/%s.msg", "sig": "%s/%s.sig", "qualifyingData": "%s", "expect": "%s"\n      }' \
    "$1" "$3" "$1" "$3" "$(sha256_text "$CERTIFY_TEXT")" "$5"
}

json_dir() {
  local d=$1
  printf '    "%s": {\n' "$d"
  printf '      "ek": { "type": "%s", %s, "nvIndex": "%s", "pub": "%s/ek.pub", "cert": "%s/ek-cert.der" },\n' \
    "${EK_ALG[$d]}" "$(json_size "${EK_ALG[$d]}")" "${EK_INDEX[$d]}" "$d" "$d"
  printf '      "ak": { "type": "%s", %s, "scheme": "%s", "hash": "sha256", %s },\n' \
    "${AK_ALG[$d]}" "$(json_size "${AK_ALG[$d]}")" "${AK_SCHEME[$d]}" "$(json_object_files "$d" ak)"
  printf '      "quote": { "msg": "%s/quote.msg", "sig": "%s/quote.sig", "pcrs": "%s/quote.pcrs", "pcrsFormat": "tpm2-tools-serialized", "nonce": "%s", "nonceFile": "%s/nonce.hex", "hash": "sha256", "scheme": "%s", "selection": "%s", "pcrDigest": "%s" }' \
    "$d" "$d" "$d" "$(sha256_text "$NONCE_TEXT")" "$d" "${AK_SCHEME[$d]}" "$PCR_SELECTION" "$(expected_pcr_digest)"
  if [[ -n ${CERTIFIES[$d]:-} ]]; then
    printf ',\n      "certify": %s' "$(json_certify "$d" key certify "$KEY_ATTRS" accept)"
  fi
  if [[ -n ${CERTIFIES_DUP[$d]:-} ]]; then
    printf ',\n      "dupCertify": %s' "$(json_certify "$d" dup-key dup-certify "$DUP_KEY_ATTRS" refuse)"
  fi
  printf '\n    }'
}

write_manifest() {
  local d sep=''
  {
    printf '{\n'
    printf '  "generator": "scripts/make-fixtures.sh",\n'
    printf '  "tools": { "swtpm": "%s", "tpm2-tools": "%s" },\n' \
      "$(swtpm --version | sed -n 's/.*version \([^,]*\),.*/\1/p')" \
      "$(tpm2_quote --version | sed -n 's/.* version="\([^"]*\)".*/\1/p')"
    printf '  "paths": "relative to this file",\n'
    printf '  "caChain": { "root": "ca-root.pem", "intermediate": "ca-intermediate.pem" },\n'
    printf '  "nonceInput": "%s",\n' "$NONCE_TEXT"
    printf '  "certifyQualifyingInput": "%s",\n' "$CERTIFY_TEXT"
    printf '  "selection": %s,\n' "$(json_selection)"
    printf '  "pcrExtends": [%s\n  ],\n' "$(json_extends)"
    printf '  "pcrValues": {\n    "sha256": %s,\n    "sha1": %s\n  },\n' \
      "$(json_pcr_bank sha256)" "$(json_pcr_bank sha1)"
    printf '  "dirs": {\n'
    for d in "${DIRS[@]}"; do
      printf '%s' "$sep"
      json_dir "$d"
      sep=$',\n'
    done
    printf '\n  }\n}\n'
  } >"$OUT/manifest.json"
  node -e 'JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"))' "$OUT/manifest.json" \
    || die "manifest.json is not valid JSON"
}

# --- main ----------------------------------------------------------------------------------------
START=$SECONDS
OUT="$WORK/out" # built aside, then swapped in, so a failed run leaves the old fixtures intact
mkdir -p "$OUT"
setup_swtpm
cp "$WORK/ca/swtpm-localca-rootca-cert.pem" "$OUT/ca-root.pem"
cp "$WORK/ca/issuercert.pem" "$OUT/ca-intermediate.pem"
start_swtpm
extend_pcrs
provision_p256_ek_cert
make_srk
make_dup_policy
for d in "${DIRS[@]}"; do make_dir "$d"; done
write_manifest
chmod -R u=rwX,go=rX "$OUT" # tpm2-tools creates files 0640/0660

mkdir -p "$OUT_DIR"
for d in "${DIRS[@]}"; do rm -rf "${OUT_DIR:?}/$d"; done
rm -f "$OUT_DIR/ca-root.pem" "$OUT_DIR/ca-intermediate.pem" "$OUT_DIR/manifest.json"
cp -R "$OUT/." "$OUT_DIR/"
echo "make-fixtures: wrote $(find "$OUT" -type f | wc -l) files (${DIRS[*]}) to fixtures/swtpm in $((SECONDS - START))s; quotes and certifications verified"
