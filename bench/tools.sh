#!/usr/bin/env bash
# Load with standard tools: the http example against Python's http.server (wrk), and
# the kv example against redis-server (redis-benchmark), on loopback, median of RUNS
# runs each. Writes bench/results/tools.md. About 4 minutes with the defaults.
#
#   bench/tools.sh                 # RUNS=3 DURATION=5 (seconds per wrk run)
#   RUNS=1 DURATION=2 bench/tools.sh
#
# Installs wrk, redis-server and redis-tools when missing and run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
REQUESTS=${REQUESTS:-100000}
OUT=bench/results/tools.md
load=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the machine skews the figures

declare -A package=([wrk]=wrk [redis-server]=redis-server [redis-benchmark]=redis-tools [python3]=python3)
missing=()
for tool in "${!package[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${package[$tool]}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "tools.sh: missing ${missing[*]}: apt-get install them first" >&2
        exit 1
    fi
    apt=(apt-get -o DPkg::Lock::Timeout=300 -q)
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}" ||
        { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; }
fi

echo "== building the examples (release)"
cargo build --release --quiet --example http --example kv
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release/examples

work=$(mktemp -d)
: >"$work/notes"
pids=()
stop() { # stop the servers this script started, by their pids
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop; rm -rf "$work"' EXIT

# A free loopback port: the kernel picks one; the tiny race with another binder is
# acceptable for a benchmark.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until something accepts on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "tools.sh: nothing listens on port $1" >&2
    exit 1
}

# Starts an example on a free port and sets `port` from its `listening on` line (not
# in a subshell, so that its pid is recorded).
start_example() {
    local name=$1
    shift
    "$bin/$name" --addr 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 200); do
        port=$(sed -n 's/^listening on [a-z]*:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/$name.out")
        [[ -n $port ]] && return
        sleep 0.05
    done
    echo "tools.sh: $name did not start: $(cat "$work/$name.err")" >&2
    exit 1
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
int() { printf '%.0f' "$1"; }

# Requests/s of one wrk run of server $1; socket errors and non-2xx answers are noted.
wrk_run() {
    local label=$1 url=$2 conns=$3 text
    text=$(wrk -t2 -c"$conns" -d"${DURATION}s" "$url")
    grep -E 'Socket errors|Non-2xx' <<<"$text" | tr -s ' ' | sed "s/^ */- $label, $conns connections: /" >>"$work/notes" || true
    awk '/^Requests\/sec:/ { print $2 }' <<<"$text"
}

# ---- HTTP --------------------------------------------------------------------------
mkdir "$work/www"
python3 -c 'print("<!DOCTYPE html>\n<title>bench</title>\n" + "<p>" + "x" * 960 + "</p>")' >"$work/www/small.html"
size=$(stat -c %s "$work/www/small.html")

start_example http --root "$work/www"
ours_port=$port
py_port=$(free_port)
(cd "$work/www" && exec python3 -m http.server --bind 127.0.0.1 --protocol HTTP/1.1 "$py_port" >/dev/null 2>&1) &
pids+=($!)
# The same server with Nagle's algorithm off: stock http.server sends a response's head
# and body in two writes, and on a kept-alive connection the second waits for the
# client's delayed ACK (about 40 ms), which hides what Python itself costs.
nodelay_port=$(free_port)
(cd "$work/www" && exec python3 -c '
import http.server as h, sys
h.SimpleHTTPRequestHandler.disable_nagle_algorithm = True
h.test(HandlerClass=h.SimpleHTTPRequestHandler, ServerClass=h.ThreadingHTTPServer,
       protocol="HTTP/1.1", port=int(sys.argv[1]), bind="127.0.0.1")' "$nodelay_port" >/dev/null 2>&1) &
pids+=($!)
for port in "$ours_port" "$py_port" "$nodelay_port"; do
    wait_port "$port"
    curl -sf -o /dev/null "http://127.0.0.1:$port/small.html" || { echo "tools.sh: no small.html on port $port" >&2; exit 1; }
done

http_rows=()
for conns in ${CONNS:-16 128 1000}; do
    ours=() py=() nodelay=()
    for run in $(seq "$RUNS"); do
        echo "== http -c$conns run $run/$RUNS"
        ours+=("$(wrk_run ours "http://127.0.0.1:$ours_port/small.html" "$conns")")
        py+=("$(wrk_run Python "http://127.0.0.1:$py_port/small.html" "$conns")")
        nodelay+=("$(wrk_run "Python, TCP_NODELAY" "http://127.0.0.1:$nodelay_port/small.html" "$conns")")
    done
    o=$(printf '%s\n' "${ours[@]}" | median)
    p=$(printf '%s\n' "${py[@]}" | median)
    n=$(printf '%s\n' "${nodelay[@]}" | median)
    http_rows+=("| $conns | $(int "$o") | $(int "$p") | $(int "$n") | $(ratio "$o" "$p")× | $(ratio "$o" "$n")× |")
done
stop

# ---- RESP --------------------------------------------------------------------------
start_example kv
ours_port=$port
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$work/redis.log" &
pids+=($!)
wait_port "$redis_port"
redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')

# `"TEST","rps",...` lines of one redis-benchmark run, as `TEST RPS`.
bench_run() {
    redis-benchmark -p "$1" -t ping,set,get -c "$2" -n "$REQUESTS" --csv 2>/dev/null |
        awk -F'"' 'NR > 1 && $2 != "test" { print $2, $4 }'
}

kv_rows=()
for conns in ${CONNS:-16 128 1000}; do
    : >"$work/ours.$conns" && : >"$work/redis.$conns"
    for run in $(seq "$RUNS"); do
        echo "== kv -c$conns run $run/$RUNS"
        bench_run "$ours_port" "$conns" >>"$work/ours.$conns"
        bench_run "$redis_port" "$conns" >>"$work/redis.$conns"
    done
    for test in PING_INLINE PING_MBULK SET GET; do
        o=$(awk -v t="$test" '$1 == t { print $2 }' "$work/ours.$conns" | median)
        r=$(awk -v t="$test" '$1 == t { print $2 }' "$work/redis.$conns" | median)
        kv_rows+=("| $test | $conns | $(int "$o") | $(int "$r") | $(ratio "$o" "$r")× |")
        ratio "$o" "$r" >>"$work/kv-ratios" && echo >>"$work/kv-ratios"
    done
done
stop

# ---- report ------------------------------------------------------------------------
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
{
    echo "# Standard load tools: the examples beside Python's http.server and Redis"
    echo
    echo "Written by \`bench/tools.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores (${cpu:-unknown CPU}),"
    echo "Linux $(uname -r), $(python3 --version), Redis $redis_version, $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)."
    echo "Median of $RUNS runs. Loopback only; the load generator shares the cores with the server;"
    echo "load average before the run: $load."
    echo
    echo "## HTTP: \`examples/http\` vs \`python3 -m http.server --protocol HTTP/1.1\`"
    echo
    echo "A $size-byte file, keep-alive, \`wrk -t2 -c{${CONNS:-16 128 1000}} -d${DURATION}s\`. Ours runs its default pool (a"
    echo "worker per CPU) and parks each kept-alive connection between requests; Python's"
    echo "\`ThreadingHTTPServer\` runs a thread per connection (and logs each request to stderr)."
    echo
    echo "| connections | ours req/s | Python req/s | Python, \`TCP_NODELAY\` | ours / Python | ours / Python, \`TCP_NODELAY\` |"
    echo "|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${http_rows[@]}"
    echo
    echo "Stock http.server writes a response's head and body in two sends with Nagle's algorithm"
    echo "on, so on a kept-alive connection each response waits for the client's delayed ACK"
    echo "(about 40 ms): its column measures that stall. The \`TCP_NODELAY\` column sets"
    echo "\`disable_nagle_algorithm = True\` on the same handler and shows what Python itself costs."
    if [[ -s $work/notes ]]; then
        echo
        echo "wrk reported errors (one line per run; a timeout is a request without an answer within 2 s):"
        echo
        cat "$work/notes"
        echo
        echo "Python's servers listen with a backlog of 5 (\`request_queue_size\`), ours with 4096: with 128"
        echo "clients connecting at once, the kernel drops SYNs for Python's full queue (\`ListenOverflows\`"
        echo "in /proc/net/netstat climbs), and those connections wait for a SYN retry."
    fi
    echo
    echo "## RESP: \`examples/kv\` vs \`redis-server\` (no persistence)"
    echo
    echo "\`redis-benchmark -t ping,set,get -n $REQUESTS -c {${CONNS:-16 128 1000}}\`, one request in flight per connection;"
    echo "ours runs its default pool (a worker per CPU) and parks each client between commands."
    echo
    echo "| test | connections | ours ops/s | redis ops/s | ours / redis |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s\n' "${kv_rows[@]}"
    echo
    echo "The kv example reaches $(sort -g "$work/kv-ratios" | head -1)–$(sort -g "$work/kv-ratios" | tail -1)× of Redis's rate here."
    echo "Where we are behind Redis, this is why: each command takes a wake-up of a pool worker from"
    echo "the poller and a lock on the map (on Linux the parked socket stays in the poller"
    echo "edge-triggered, with no re-arm; elsewhere one more system call); Redis serves every"
    echo "connection from one event loop with no lock and answers many ready sockets per"
    echo "wake-up. The load generator shares the 2 cores with both."
} >"$OUT"
echo "== wrote $OUT"
cat "$OUT"
