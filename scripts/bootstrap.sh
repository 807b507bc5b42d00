#!/usr/bin/env bash
# Installs what Attestor needs on a Debian machine, then its npm dependencies and builds.
# Idempotent: each step runs only when its inputs changed, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*"; }

# swtpm/tpm2-tools/softhsm2 are for tests and the demo; libtss2-dev + pkg-config + a C++
# toolchain build the agent's native addon (the verifier runs without it).
packages=(swtpm swtpm-tools tpm2-tools softhsm2 libtss2-dev pkg-config g++ make python3)
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

# npm ci only when the lockfile differs from the one last installed.
stamp=node_modules/.attestor-installed-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "npm ci"
  npm ci --no-fund --no-audit
  cp package-lock.json "$stamp"
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
  if [ ! -f "$addon" ] || [ -n "$(find native -path native/build -prune -o -newer "$addon" -type f -print -quit)" ]; then
    say "building native addon node-tss"
    # Build against the headers of the Node.js that runs us when they are installed
    # (Debian's nodejs ships them), so node-gyp never needs to download any.
    nodedir="$(node -p 'require("path").resolve(process.execPath, "../..")')"
    nodedir_flag=()
    [ -f "$nodedir/include/node/node.h" ] && nodedir_flag=(--nodedir="$nodedir")
    node_modules/.bin/node-gyp rebuild --directory native "${nodedir_flag[@]}" >/dev/null
  fi
fi
