#!/usr/bin/env bash
# Installs the system packages Sluice needs to build, test and run the demo.
# Idempotent: packages already installed are skipped, and apt is only asked
# (apt-get update first) when something is missing.
set -euo pipefail

PACKAGES=(
    # build
    pkg-config libclang-dev gcc make
    # DPDK 22.11 (runtime, PMDs, headers, dpdk-testpmd)
    dpdk dpdk-dev libdpdk-dev
    # test topology, traffic and inspection
    iproute2 ethtool procps python3 curl psmisc
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all system packages present"
else
    echo "deps: installing ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: cargo not found; install a Rust toolchain (https://rustup.rs) and re-run" >&2
    exit 1
fi

ver=$(pkg-config --modversion libdpdk)
case "$ver" in
    2[2-9].*|[3-9][0-9].*) ;;
    *) echo "deps: DPDK $ver found, Sluice needs >= 22.11" >&2; exit 1 ;;
esac
