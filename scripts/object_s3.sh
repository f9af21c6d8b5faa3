#!/usr/bin/env bash
# The object tier's tests (tests/object_s3.rs, feature `s3`) against a real S3 gateway: brings
# up the single-node Ceph cluster of scripts/ceph.sh, runs the tests (a missing gateway is a
# failure, never a skip), then scripts/mirror_outage.sh (a mounted store's mirror through a
# minute with radosgw stopped: after the tests, which need the gateway, never beside them),
# and takes the cluster down on any exit.
#
#   bash scripts/object_s3.sh            (scripts/test.sh runs it in its `object` stage)
#
# Env: CEPH_DIR as for scripts/ceph.sh (default /tmp/logstorfs-ceph-tests here).
set -euo pipefail
cd "$(dirname "$0")/.."
export CEPH_DIR="${CEPH_DIR:-/tmp/logstorfs-ceph-tests}"

t_up=$(date +%s%N)
trap 'bash scripts/ceph.sh down' EXIT
trap 'exit 143' TERM INT
env_lines="$(bash scripts/ceph.sh up)" || { echo "FAIL: scripts/ceph.sh up failed" >&2; exit 1; }
eval "$env_lines"
up_ms=$((($(date +%s%N) - t_up) / 1000000))

t_test=$(date +%s%N)
rc=0
# Two runs: a name filter would apply to both targets, and the gateway tests' names do not
# carry the library's module path.
cargo test --release --features s3 --test object_s3 || rc=$?
cargo test --release --features s3 --lib object:: || rc=$?
test_ms=$((($(date +%s%N) - t_test) / 1000000))

# On this cluster, with the logstorfs binary the tests built (with the `s3` feature). In
# scripts/test.sh it reports into RESULTS_FILE; a run that died before its summary is a failure.
t_outage=$(date +%s%N)
bash scripts/mirror_outage.sh || rc=$?
if [[ -n "${RESULTS_FILE:-}" ]] && ! grep -q "^mirror-outage " "$RESULTS_FILE"; then
    echo "mirror-outage 0 1" >> "$RESULTS_FILE"
fi
outage_ms=$((($(date +%s%N) - t_outage) / 1000000))

t_down=$(date +%s%N)
bash scripts/ceph.sh down
trap - EXIT
down_ms=$((($(date +%s%N) - t_down) / 1000000))
echo "object_s3: gateway up in ${up_ms} ms, tests (with any build) ${test_ms} ms, mirror_outage.sh ${outage_ms} ms, down in ${down_ms} ms"
exit $rc
