#!/usr/bin/env bash
# Load comparison: requests/s of Caddy's reverse_proxy behind a Wasm filter
# against the same Caddy doing the same header work with native directives,
# in one run, alternating routes so that machine noise hits all of them.
#
#   tests/load/run.sh            # or: make load
#
# Environment: DURATION (per measurement, default 10s), ROUNDS (default 3),
# CONNECTIONS (default 32), THREADS (wrk threads, default 2), CADDY (a
# prebuilt binary; default: build cmd/caddy), EXTRA_ROUTES ("1" adds routes
# with snapshots off, with no pre-warmed instances and with recycling off). Prints a table of median requests/s and ratios.
# Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -z "${CADDY:-}" ]; then
	CADDY="$work/caddy"
	go build -o "$CADDY" ./cmd/caddy
fi
wat2wasm tests/guests/wat/add_header.wat -o "$work/tiny.wasm"
(cd tests/guests && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o "$work/tag.wasm" ./tag)

base=18400
up=127.0.0.1:$base
admin=127.0.0.1:$((base+99))
cat > "$work/Caddyfile" <<CADDY
{
	admin $admin
	auto_https off
	persist_config off
	default_bind 127.0.0.1
}
# the upstream
http://$up {
	respond "ok"
}
# tiny filter: one response header
http://127.0.0.1:$((base+1)) {
	header X-Wat hello
	reverse_proxy $up
}
http://127.0.0.1:$((base+2)) {
	wasm_filter $work/tiny.wasm
	reverse_proxy $up
}
# stock-Go filter (official SDK): one request and one response header
http://127.0.0.1:$((base+3)) {
	request_header X-Chain bench
	header X-Chain bench
	reverse_proxy $up
}
http://127.0.0.1:$((base+4)) {
	wasm_filter $work/tag.wasm {
		config bench
	}
	reverse_proxy $up
}
CADDY
# filter_routes PORT OPTION: a tiny-filter site on PORT and a stock-Go one
# on PORT+1, each filter with OPTION (a wasm_filter option line, or none).
filter_routes() {
	cat >> "$work/Caddyfile" <<CADDY
http://127.0.0.1:$1 {
	wasm_filter $work/tiny.wasm {
		$2
	}
	reverse_proxy $up
}
http://127.0.0.1:$(($1+1)) {
	wasm_filter $work/tag.wasm {
		config bench
		$2
	}
	reverse_proxy $up
}
CADDY
}
if [ "${EXTRA_ROUTES:-}" = 1 ]; then
	filter_routes $((base+5)) "snapshot off"
	filter_routes $((base+7)) "prewarm 0"
	filter_routes $((base+9)) "recycle off"
fi
"$CADDY" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$((base+4))/" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsi "http://127.0.0.1:$((base+2))/" | grep -qi '^x-wat: hello' || { echo "tiny filter route not working" >&2; cat "$work/caddy.log" >&2; exit 1; }
curl -fsi "http://127.0.0.1:$((base+4))/" | grep -qi '^x-chain: bench' || { echo "go filter route not working" >&2; exit 1; }

routes=(native-tiny wasm-tiny native-go wasm-go)
ports=($((base+1)) $((base+2)) $((base+3)) $((base+4)))
if [ "${EXTRA_ROUTES:-}" = 1 ]; then
	routes+=(wasm-tiny-nosnap wasm-go-nosnap wasm-tiny-noprewarm wasm-go-noprewarm wasm-tiny-norecycle wasm-go-norecycle)
	ports+=($((base+5)) $((base+6)) $((base+7)) $((base+8)) $((base+9)) $((base+10)))
fi

declare -A results
for round in $(seq "$ROUNDS"); do
	for i in "${!routes[@]}"; do
		rps=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:${ports[$i]}/" | awk '/^Requests\/sec:/ {print $2}')
		results[${routes[$i]}]+="$rps "
		echo "round $round ${routes[$i]}: $rps req/s" >&2
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\n%-18s %12s   %s\n' route "median req/s" "all rounds"
for r in "${routes[@]}"; do
	printf '%-18s %12.0f   %s\n' "$r" "$(echo "${results[$r]}" | median)" "${results[$r]}"
done
# ratio A B: A's median over B's, then the median of the rounds' own ratios
# (A and B measured back to back share the machine's noise of the moment).
rounds() { echo "${results[$1]}" | tr ' ' '\n' | grep -v '^$'; }
ratio() {
	awk -v a="$(echo "${results[$1]}" | median)" -v b="$(echo "${results[$2]}" | median)" 'BEGIN {printf "%.2f", a/b}'
	printf ' (per round: %.2f)' "$(paste <(rounds "$1") <(rounds "$2") | awk '{print $1/$2}' | median)"
}
echo
echo "ratio wasm-tiny / native-tiny: $(ratio wasm-tiny native-tiny)"
echo "ratio wasm-go   / native-go:   $(ratio wasm-go native-go)"
if [ "${EXTRA_ROUTES:-}" = 1 ]; then
	echo "ratio wasm-tiny-nosnap / native-tiny: $(ratio wasm-tiny-nosnap native-tiny)"
	echo "ratio wasm-go-nosnap   / native-go:   $(ratio wasm-go-nosnap native-go)"
	echo "ratio wasm-tiny-noprewarm / native-tiny: $(ratio wasm-tiny-noprewarm native-tiny)"
	echo "ratio wasm-go-noprewarm   / native-go:   $(ratio wasm-go-noprewarm native-go)"
	echo "ratio wasm-tiny-norecycle / native-tiny: $(ratio wasm-tiny-norecycle native-tiny)"
	echo "ratio wasm-go-norecycle   / native-go:   $(ratio wasm-go-norecycle native-go)"
fi
echo "(wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, $(nproc) CPUs, $(date -u +%Y-%m-%d))"

# Config reloads through the admin API: the same config (every filter is
# found loaded and shared), then one where the stock-Go filter's
# configuration changed (it is loaded again, its code from the on-disk
# compilation cache), the median of five each.
reload() {
	curl -fs -o /dev/null -w '%{time_total}\n' -X POST -H 'Content-Type: text/caddyfile' \
		--data-binary @"$1" "http://$admin/load"
}
same=() changed=()
for i in 1 2 3 4 5; do
	same+=("$(reload "$work/Caddyfile")")
	sed "0,/config bench$/s//config bench-$i/" "$work/Caddyfile" > "$work/Caddyfile.changed"
	changed+=("$(reload "$work/Caddyfile.changed")")
	reload "$work/Caddyfile" >/dev/null
done
echo "reload, unchanged filters:          median $(printf '%s\n' "${same[@]}" | median)s"
echo "reload, stock-Go filter reconfigured: median $(printf '%s\n' "${changed[@]}" | median)s"
