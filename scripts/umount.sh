#!/usr/bin/env bash
# Unmount ./mount (mounted by scripts/mount.sh), or the mount point given as argument.
# The daemon flushes everything on unmount; this waits until the mount is gone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
MNT="${1:-./mount}"
if ! mountpoint -q "$MNT" 2>/dev/null && ! grep -qs " $(realpath -m "$MNT") " /proc/mounts; then
    echo "$MNT is not mounted"; exit 0
fi
unmount "$MNT" || { echo "could not unmount $MNT (busy? see: fuser -vm $MNT)" >&2; exit 1; }
echo "unmounted $MNT"
