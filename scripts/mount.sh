#!/usr/bin/env bash
# Build logstorfs and mount the store ./store (created if missing, git-ignored) on ./mount.
#   bash scripts/mount.sh [extra `logstorfs mount` options, e.g. --size 4G -o allow_other]
# Unmount with: bash scripts/umount.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v fusermount3 >/dev/null; then
    [[ $(id -u) -eq 0 ]] || { echo "fusermount3 is missing: sudo apt-get install -y fuse3" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi
modprobe fuse 2>/dev/null || true
[[ -c /dev/fuse ]] || { echo "/dev/fuse does not exist: this machine cannot mount FUSE file systems" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --release --quiet
mkdir -p mount
if mountpoint -q mount; then echo "./mount is already mounted (bash scripts/umount.sh first)" >&2; exit 1; fi
target/release/logstorfs mount --daemon --create "$@" ./store ./mount
echo "mounted ./store on $(pwd)/mount"
df -h ./mount | tail -n 1
