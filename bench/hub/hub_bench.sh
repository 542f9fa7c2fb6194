#!/usr/bin/env bash
# bench/hub/hub_bench.sh: download throughput of the Hub mirror over loopback.
#
# Generates a file (1 GiB by default; HUB_BENCH_MIB=N to change), serves it with
# `moonspace serve --mirror`, and in the same run times:
#   - `curl -o FILE` of the resolve URL (the reference),
#   - `moonspace pull` of the repo (HEAD, GET, sha256 check, rename, symlink),
# best of HUB_BENCH_RUNS (default 5) each, and samples the host's RSS every 200 ms during
# the downloads (it must stay flat: the body streams from disk). Goal: pull >= 0.9x curl.
# Usage: bench/hub/hub_bench.sh [BIN_DIR]   (default bin/); HUB_BENCH_DIR=/dev/shm takes the
# disk out of the measurement (default /tmp).
set -euo pipefail
BIN=${1:-bin}
MIB=${HUB_BENCH_MIB:-1024}
RUNS=${HUB_BENCH_RUNS:-5}
T=$(mktemp -d "${HUB_BENCH_DIR:-/tmp}/ms-hub-bench-XXXXXX")
HOST_PID=
cleanup() { [ -n "$HOST_PID" ] && kill "$HOST_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

mkdir -p "$T/mirror/bench/big"
echo "generating ${MIB} MiB of random data..."
head -c $((MIB << 20)) /dev/urandom > "$T/mirror/bench/big/model.safetensors"

"$BIN/moonspace" serve --host 127.0.0.1 --port 0 --data "$T/data" --apps "$T/noapps" --mirror "$T/mirror" \
	--no-access-log >"$T/host.log" 2>&1 &
HOST_PID=$!
for _ in $(seq 100); do grep -q "serving" "$T/host.log" && break; sleep 0.05; done
PORT=$(grep -o '127.0.0.1:[0-9]*' "$T/host.log" | head -1 | cut -d: -f2)
URL="http://127.0.0.1:$PORT/bench/big/resolve/main/model.safetensors"
rss() { # bash builtins only: the sampler must not steal CPU from the transfer
	local k v _
	while read -r k v _; do [[ $k == VmRSS: ]] && { echo "$v"; return; }; done <"/proc/$HOST_PID/status"
}

t0=$(date +%s.%N)
curl -sfI "$URL" >/dev/null
t1=$(date +%s.%N)
printf "first request (the mirror hashes the file once): %.2f s; RSS %s KiB\n" "$(echo "$t1 - $t0" | bc)" "$(rss)"
t0=$(date +%s.%N); curl -sfI "$URL" >/dev/null; t1=$(date +%s.%N)
printf "second request (hash cached): %.3f s\n" "$(echo "$t1 - $t0" | bc)"

sample() { # samples the host's RSS into $1 until killed
	while :; do rss >>"$1"; sleep 0.2; done
}
best() { sort -g | head -1; }
curl_times=() pull_times=()
: >"$T/rss"
sample "$T/rss" & SAMPLER=$!
for i in $(seq "$RUNS"); do
	rm -f "$T/curl.out"; sync
	t0=$(date +%s.%N); curl -sf -o "$T/curl.out" "$URL"; t1=$(date +%s.%N)
	curl_times+=("$(echo "$t1 - $t0" | bc)")
	rm -rf "$T/cache"; sync
	t0=$(date +%s.%N)
	HF_ENDPOINT="http://127.0.0.1:$PORT" HF_HUB_CACHE="$T/cache" "$BIN/moonspace" pull bench/big >/dev/null 2>"$T/pull.log" ||
		{ cat "$T/pull.log"; exit 1; }
	t1=$(date +%s.%N)
	pull_times+=("$(echo "$t1 - $t0" | bc)")
	cmp -s "$T/curl.out" "$T/mirror/bench/big/model.safetensors" || { echo "curl got different bytes"; exit 1; }
done
kill $SAMPLER 2>/dev/null || true
wait $SAMPLER 2>/dev/null || true
ct=$(printf "%s\n" "${curl_times[@]}" | best)
pt=$(printf "%s\n" "${pull_times[@]}" | best)
cr=$(echo "$MIB / $ct" | bc -l)
pr=$(echo "$MIB / $pt" | bc -l)
ratio=$(echo "$pr / $cr" | bc -l)
printf "curl -o:        best %.2f s of %d  -> %7.1f MiB/s   (runs: %s)\n" "$ct" "$RUNS" "$cr" "${curl_times[*]}"
printf "moonspace pull: best %.2f s of %d  -> %7.1f MiB/s   (runs: %s)\n" "$pt" "$RUNS" "$pr" "${pull_times[*]}"
printf "pull / curl = %.2f (goal >= 0.90): %s\n" "$ratio" "$(echo "$ratio >= 0.9" | bc -l | sed 's/1/met/;s/0/NOT met/')"
printf "host RSS during the downloads: min %s KiB, max %s KiB (%d samples)\n" "$(sort -n "$T/rss" | head -1)" \
	"$(sort -n "$T/rss" | tail -1)" "$(wc -l <"$T/rss")"
