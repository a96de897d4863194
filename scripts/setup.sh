#!/bin/sh
# Sets twindisk up on a Debian 12 machine: Debian packages, npm packages, the TypeScript and wasm builds.
# Idempotent and quiet when everything is already there; run by `npm run demo` and `npm test`.
set -eu
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages twindisk and its tests use. Each is checked, and only the missing ones are installed.
PACKAGES="qemu-system-x86 qemu-utils qemu-block-extra busybox-static linux-image-amd64 fio kmod iproute2 openssl ipxe syslinux syslinux-common mtools dosfstools open-iscsi libiscsi-bin libiscsi-dev gcc tgt libvirt-clients libxml2-utils mdadm resource-agents pacemaker pacemaker-cli-utils corosync chromium"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing packages:$missing, and there is no apt-get here."
    say "install them with your package manager (twindisk is tested on Debian 12), then run this again."
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages:$missing"
    say "run as root:  apt-get update && apt-get install -y$missing   (then run this command again)"
    exit 1
  fi
  say "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || { say "apt-get update failed: check the machine's apt sources and network, then retry."; exit 1; }
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >&2 || { say "apt-get install failed (see above): fix apt, then retry."; exit 1; }
fi

# npm packages: installed from the lock file when node_modules is missing or older than the lock.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2 || { say "npm ci failed: check that the npm registry is reachable, then retry."; exit 1; }
fi

# The Pacemaker resource agent ocf:twindisk:resource, where Pacemaker looks for it (as root only).
agent=/usr/lib/ocf/resource.d/twindisk/resource
if [ "$(id -u)" = 0 ] && ! cmp -s contrib/ocf/resource "$agent"; then
  install -D -m 0755 contrib/ocf/resource "$agent" || { say "cannot install $agent (see above)"; exit 1; }
fi

# Builds: TypeScript always (tsc is incremental enough at this size), wasm when its build script exists.
if [ -f wasm/build.mjs ]; then node wasm/build.mjs >&2; fi
say "type-checking and compiling TypeScript"
npx tsc -p tsconfig.json >&2 || { say "TypeScript did not compile: see the errors above."; exit 1; }
