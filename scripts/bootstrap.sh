#!/usr/bin/env bash
# Installs what Attestor needs on a Debian machine, then its npm dependencies and builds.
# Idempotent: each step runs only when its inputs changed, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*"; }

# swtpm/tpm2-tools/softhsm2 are for tests and the demo; libtss2-dev + pkg-config + a C++
# toolchain build the agent's native addon (the verifier runs without it); OpenSSL's tpm2
# provider, tpm2-abrmd (on a private dbus-daemon bus in the demo) and the PKCS#11 engine let
# OpenSSL use the agent's TPM or token key.
packages=(swtpm swtpm-tools tpm2-tools softhsm2 libtss2-dev pkg-config g++ make python3 openssl
  tpm2-openssl tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon libengine-pkcs11-openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root or sudo to install: ${missing[*]}"; exit 1; }
    sudo=sudo
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lockfile or the Node.js version (native modules' ABI) changed since.
stamp=node_modules/.attestor-installed
want="$(node --version) $(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "npm ci"
  npm ci --no-fund --no-audit
  printf '%s' "$want" > "$stamp"
fi

# TypeScript build when any source or config is newer than the last build.
if [ ! -f dist/.built ] || [ -n "$(find src tsconfig.json tsconfig.build.json -newer dist/.built -print -quit)" ]; then
  say "building TypeScript"
  rm -rf dist
  node_modules/.bin/tsc -p tsconfig.build.json
  chmod +x dist/cli/*.js
  touch dist/.built
fi

# The agent's addon, when its sources exist.
if [ -f native/binding.gyp ]; then
  addon=native/build/Release/node_tss.node
  addon_stamp=native/build/.node-version
  if [ ! -f "$addon" ] || [ "$(cat "$addon_stamp" 2>/dev/null)" != "$(node --version)" ] ||
    [ -n "$(find native -path native/build -prune -o -path native/node_modules -prune -o -newer "$addon" -type f -print -quit)" ]; then
    say "building native addon node-tss"
    # Build against the headers of the Node.js that runs us when they are installed
    # (Debian's nodejs ships them), so node-gyp never needs to download any.
    nodedir="$(node -p 'require("path").resolve(process.execPath, "../..")')"
    nodedir_flag=()
    [ -f "$nodedir/include/node/node.h" ] && nodedir_flag=(--nodedir="$nodedir")
    log="$(mktemp)"
    if ! node_modules/.bin/node-gyp rebuild --directory native "${nodedir_flag[@]}" >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      say "the native addon failed to build (see above); the verifier does not need it"
      exit 1
    fi
    rm -f "$log"
    node --version > "$addon_stamp"
  fi
fi
