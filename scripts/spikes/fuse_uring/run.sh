#!/usr/bin/env bash
# FUSE request round trip: classic /dev/fuse vs FUSE-over-io_uring vs fuser (fuse_floor).
# A spike, not part of logstorfs or CI; see README.md.  Needs root, gcc, liburing-dev,
# a kernel with CONFIG_FUSE_IO_URING, and target/release/fuse_floor (or FLOOR=... / FLOOR=none).
#
#   scripts/spikes/fuse_uring/run.sh            # N=200000 calls of each kind, ROUNDS=5
#   N=50000 ROUNDS=3 PIN=0 MODES="classic uring" scripts/spikes/fuse_uring/run.sh
#
# Modes: classic (/dev/fuse read/write, one thread), uring (FUSE over io_uring, one queue
# thread per CPU), uring_dt (the same with SINGLE_ISSUER|DEFER_TASKRUN rings), floor (fuser's
# classic path: target/release/fuse_floor --ttl-ms 0, its own threads).
# Each round runs every mode once, in an order that rotates between rounds; a mode's run
# mounts a fresh file system, times N fstat() (one GETATTR each: attr timeout 0) and N 4 KiB
# O_DIRECT pread()s (one READ each), then unmounts.  PIN=cpu pins the client with taskset.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
N=${N:-200000}
ROUNDS=${ROUNDS:-5}
FLOOR=${FLOOR:-$repo/target/release/fuse_floor}
param=/sys/module/fuse/parameters/enable_uring

[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (mount(2), enable_uring)" >&2; exit 1; }
[ -w "$param" ] || { echo "run.sh: no $param: kernel without CONFIG_FUSE_IO_URING?" >&2; exit 1; }

tmp=$(mktemp -d /tmp/fuse-uring-spike.XXXXXX)
mnt=$tmp/mnt
mkdir "$mnt"
uring_was=$(cat "$param")
daemon=
cleanup() {
	if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
	umount -l "$mnt" 2>/dev/null || true
	echo "$uring_was" > "$param"
	rm -rf "$tmp"
}
trap cleanup EXIT

gcc -O2 -Wall -Wextra -o "$tmp/spike" "$here/fuse_uring_spike.c" -luring -lpthread

modes=${MODES:-classic uring uring_dt floor}
if [ "$FLOOR" = none ]; then
	modes=$(echo "$modes" | sed 's/floor//')
elif [[ " $modes " == *" floor "* ]] && [ ! -x "$FLOOR" ]; then
	echo "run.sh: no $FLOOR (cargo build --release --bin fuse_floor, or FLOOR=none)" >&2; exit 1
fi
client=("$tmp/spike" bench)
[ -n "${PIN:-}" ] && client=(taskset -c "$PIN" "$tmp/spike" bench)

wait_for() { # wait_for CMD...: up to 5 s
	for _ in $(seq 100); do "$@" && return 0; sleep 0.05; done
	echo "run.sh: timed out waiting for: $*" >&2; return 1
}

# run_mode MODE: mounts, benches, unmounts; sets res to "fstat_us pread_us"
run_mode() {
	local mode=$1
	case $mode in
	classic | uring | uring_dt)
		[ "$mode" != classic ] && echo Y > "$param"
		"$tmp/spike" serve "$mode" "$mnt" > "$tmp/daemon.out" 2> "$tmp/daemon.err" &
		daemon=$!
		wait_for grep -q ready "$tmp/daemon.out" || { cat "$tmp/daemon.err" >&2; exit 1; }
		# once the connection negotiated io_uring the parameter no longer matters
		echo "$uring_was" > "$param"
		;;
	floor)
		"$FLOOR" "$mnt" --ttl-ms 0 --no-default-permissions > "$tmp/daemon.out" 2> "$tmp/daemon.err" &
		daemon=$!
		wait_for grep -q " $mnt fuse" /proc/mounts
		head -c 1M /dev/zero > "$mnt/f"
		;;
	esac
	res=$("${client[@]}" "$mnt/f" "$N")
	kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
	umount -l "$mnt" 2>/dev/null || true
	if [ "$mode" != floor ]; then
		# the daemon's own count: every call must have been one request on the intended path
		grep -q "served: classic [0-9]* uring [0-9]*" "$tmp/daemon.err" || { cat "$tmp/daemon.err" >&2; exit 1; }
		echo "  $mode daemon $(grep served "$tmp/daemon.err")" >&2
	fi
}

echo "kernel $(uname -r), $(nproc) CPUs, N=$N per kind, $ROUNDS rounds, client pin: ${PIN:-none}" >&2
pgrep -f ci-clone > /dev/null && echo "WARNING: a ci-clone process is running; figures are noisy" >&2
results=$tmp/results
set -- $modes
for r in $(seq "$ROUNDS"); do
	# rotate the order so no mode always runs first
	shift_by=$(( (r - 1) % $# ))
	order=$(echo "$modes" | awk -v s="$shift_by" '{for(i=0;i<NF;i++) printf "%s ", $(((i+s)%NF)+1)}')
	for m in $order; do
		load=$(cut -d' ' -f1 /proc/loadavg)
		run_mode "$m"
		echo "$m $r $res $load" >> "$results"
		echo "round $r $m: fstat $(echo "$res" | cut -d' ' -f1) us, pread $(echo "$res" | cut -d' ' -f2) us (load $load)" >&2
	done
done

echo
printf "%-9s %-28s %-30s %s\n" mode "fstat us: median [min-max]" "pread 4K us: median [min-max]" "load1 [min-max]"
for m in $modes; do
	stats() { # column -> "median [min-max]"
		awk -v m="$m" -v c="$1" '$1==m {print $c}' "$results" | sort -g |
			awk '{v[NR]=$1} END {med = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.2f [%.2f-%.2f]", med, v[1], v[NR]}'
	}
	printf "%-9s %-28s %-30s %s\n" "$m" "$(stats 3)" "$(stats 4)" "$(stats 5)"
done
