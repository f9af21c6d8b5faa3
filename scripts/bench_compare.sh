#!/usr/bin/env bash
# Old build against new build of logstorfs on scripts/bench.sh's workloads: does a change make
# any figure worse?
#
#   sudo bash scripts/bench_compare.sh [--full] OLD_REV NEW_REV
#
# Builds the release binary of each revision (from `git archive` into a temporary directory, so
# no checkout or worktree of this repository is touched), then runs bench.sh on logstorfs alone
# with each binary in turn, ROUNDS times, the order alternating from round to round (old first in
# odd rounds, new first in even ones) so that a drift of the machine weighs on both. It prints,
# per metric, the median of each side and the ratio new/old (> 1: new is faster, as in bench.sh;
# for a time, old/new), and exits 1 if any ratio is below MIN_RATIO.
#
# Sizes are bench.sh's --quick ones unless --full is given; bench.sh's own variables (SEQ_MB,
# SMALL_FILES, META_FILES, LOGSTOR_SIZE, LOGSTOR_OPTS, ...) pass through.
# Environment: ROUNDS (5), MIN_RATIO (0.95), CMP_WORKLOADS (bench.sh workloads, default
# "small meta seq": small_files, meta_create/stat/unlink, seq_write/seq_read), CARGO_TARGET_DIR
# (shared by both builds; default a directory under the temporary one, removed at the end: set
# it to keep the dependencies built between runs), KEEP (1 keeps the temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

SIZE_ARG=(--quick)
args=()
for a in "$@"; do
    case "$a" in
        --full) SIZE_ARG=() ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option: $a (try --help)" >&2; exit 2 ;;
        *) args+=("$a") ;;
    esac
done
[[ ${#args[@]} -eq 2 ]] || { echo "usage: $0 [--full] OLD_REV NEW_REV" >&2; exit 2; }
ROUNDS="${ROUNDS:-5}"
MIN_RATIO="${MIN_RATIO:-0.95}"
CMP_WORKLOADS="${CMP_WORKLOADS:-small meta seq}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer, not '$ROUNDS'" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root (bench.sh mounts loop devices and drops caches)" >&2; exit 1; }

declare -A REV SHA
REV[old]="${args[0]}"; REV[new]="${args[1]}"
for side in old new; do
    SHA[$side]="$(git -C "$REPO" rev-parse --verify --quiet "${REV[$side]}^{commit}")" ||
        { echo "not a revision: ${REV[$side]}" >&2; exit 2; }
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
base=/work; [[ -d $base && -w $base ]] || base="$(dirname "$REPO")"
T="$(mktemp -d "$base/logstorfs-benchcmp.XXXXXX")"
cleanup() {
    local rc=$?
    if [[ "${KEEP:-0}" == 1 ]]; then echo "temporary directory kept: $T" >&2; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
TARGET="${CARGO_TARGET_DIR:-$T/target}"

build() { # build SIDE: the release binary of REV[SIDE] at $T/logstorfs-SIDE
    local side=$1 src="$T/src-$1"
    if [[ $side == new && ${SHA[new]} == "${SHA[old]}" ]]; then
        cp "$T/logstorfs-old" "$T/logstorfs-new"; return
    fi
    mkdir -p "$src"
    git -C "$REPO" archive "${SHA[$side]}" | tar -x -C "$src"
    # tar gives every file the commit's time, older than the other side's build in a shared
    # target directory, and cargo (which keys a package on its path relative to the workspace,
    # and its freshness on mtimes) would take that build for this one's.
    find "$src" -type f -exec touch {} +
    log "building $side (${REV[$side]} = ${SHA[$side]:0:10}) in $TARGET"
    (cd "$src" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin logstorfs)
    cp "$TARGET/release/logstorfs" "$T/logstorfs-$side"
}
t_build=$SECONDS
build old
build new
log "built both in $((SECONDS - t_build)) s"
if [[ ${SHA[old]} != "${SHA[new]}" ]] && cmp -s "$T/logstorfs-old" "$T/logstorfs-new"; then
    log "note: both revisions built to identical binaries"
fi

t_runs=$SECONDS
for r in $(seq 1 "$ROUNDS"); do
    order=(old new); (( r % 2 == 0 )) && order=(new old)
    for side in "${order[@]}"; do
        log "round $r/$ROUNDS: $side"
        if ! LOGSTORFS="$T/logstorfs-$side" BENCH_COMMIT="${REV[$side]}" SYSTEMS=logstorfs \
                WORKLOADS="$CMP_WORKLOADS" RUNS=1 BENCH_DOCS=0 BENCH_RAW="$T/raw-$side" \
                bash "$REPO/scripts/bench.sh" "${SIZE_ARG[@]}" >"$T/bench-$side-$r.out" 2>"$T/bench-$side-$r.err"; then
            echo "bench.sh failed for $side in round $r:" >&2
            tail -n 20 "$T/bench-$side-$r.out" "$T/bench-$side-$r.err" >&2
            exit 1
        fi
    done
done
log "ran $ROUNDS rounds in $((SECONDS - t_runs)) s"

echo "bench_compare: old ${REV[old]} (${SHA[old]:0:10}), new ${REV[new]} (${SHA[new]:0:10}), $ROUNDS rounds alternating, workloads: $CMP_WORKLOADS${SIZE_ARG[*]:+ (${SIZE_ARG[*]} sizes)}"
python3 - "$T/raw-old" "$T/raw-new" "$MIN_RATIO" <<'EOF'
import statistics, sys
LOWER_IS_BETTER = {"ls_l", "untar", "du"}  # times; every other figure is a rate
def load(path):
    runs = {}
    for line in open(path):
        metric, system, value = line.split()
        if system == "logstorfs":
            runs.setdefault(metric, []).append(float(value))
    return runs
old, new, min_ratio = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
worse = []
print("%-14s %12s %12s %9s" % ("metric", "old median", "new median", "new/old"))
for m in sorted(set(old) | set(new)):
    if m not in old or m not in new:
        print("%-14s missing on the %s side" % (m, "old" if m not in old else "new"))
        worse.append(m)
        continue
    o, n = statistics.median(old[m]), statistics.median(new[m])
    ratio = o / n if m in LOWER_IS_BETTER else n / o
    flag = "  WORSE" if ratio < min_ratio else ""
    print("%-14s %12.1f %12.1f %9.3f%s" % (m, o, n, ratio, flag))
    if flag:
        worse.append(m)
if not old:
    sys.exit("no figures recorded")
if worse:
    print("below %.2f: %s" % (min_ratio, " ".join(worse)))
    sys.exit(1)
print("every ratio >= %.2f" % min_ratio)
EOF
