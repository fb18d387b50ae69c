#!/usr/bin/env bash
# Instructions per message in the server's own code, under callgrind: the echo pool
# against tokio_echo, 64-byte messages on persistent TCP connections. Unlike the
# throughput tables, these counts do not move with the machine's load (they do move a
# few percent with how the threads interleave), so they show a change in the server's user
# space that a noisy run of `cargo run -p bench` hides. They leave out the kernel (most of
# a message's cost: the system calls and loopback TCP) and what a cache miss costs.
# About 40 seconds, once the two servers are built.
#
#   bench/instructions.sh                       # 1,000 and 16 connections
#   CONNECTIONS="100" ROUNDS=50 bench/instructions.sh
#
# Needs valgrind (installed with apt-get when missing and run as root) and python3 (the
# client, which is not measured).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-"1000 16"}
# Messages measured per connection count: ROUNDS rounds of one message per connection
# (at least 10,000 messages in all), after 3 rounds of warmup that are not counted.
ROUNDS=${ROUNDS:-}

if ! command -v valgrind >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "instructions.sh: valgrind is missing: apt-get install valgrind first" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends valgrind >/dev/null ||
        { apt-get -q update >/dev/null && apt-get -q install -y --no-install-recommends valgrind >/dev/null; }
fi

echo "== building the echo example and tokio_echo (release)" >&2
cargo build --release --quiet --example echo -p socketserver
cargo build --release --quiet -p bench --bin tokio_echo
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One request in flight per connection: every connection sends its message, then every
# reply is read, round after round. Counters are zeroed after the warmup and dumped after
# the rounds, through callgrind_control.
cat >"$work/client.py" <<'EOF'
import selectors, socket, subprocess, sys
port, conns, rounds, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
message = bytes(range(64))
def one_round():
    for s in socks:
        s.sendall(message)
    selector, need = selectors.DefaultSelector(), {}
    for s in socks:
        selector.register(s, selectors.EVENT_READ)
        need[s] = len(message)
    while need:
        for key, _ in selector.select(30) or sys.exit("no reply within 30 s"):
            s = key.fileobj
            got = s.recv(need[s])
            if not got:
                sys.exit("the server closed a connection")
            need[s] -= len(got)
            if not need[s]:
                selector.unregister(s)
                del need[s]
    selector.close()
for _ in range(3):
    one_round()
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
for _ in range(rounds):
    one_round()
subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
EOF

# Prints "instructions L1-read-misses L1-write-misses" per message for one server.
measure() { # name conns rounds program args...
    local name=$1 conns=$2 rounds=$3
    shift 3
    local dir="$work/$name-$conns"
    mkdir -p "$dir"
    valgrind --tool=callgrind --cache-sim=yes --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$dir/out.%p" "$@" --addr 127.0.0.1:0 >"$dir/stdout" 2>"$dir/valgrind.log" &
    local pid=$!
    for _ in $(seq 1 200); do
        grep -q listening "$dir/stdout" 2>/dev/null && break
        sleep 0.1
    done
    local port
    port=$(grep -o '127.0.0.1:[0-9]*' "$dir/stdout" | head -1 | cut -d: -f2)
    [[ -n $port ]] || { echo "instructions.sh: $name did not start; see below" >&2; cat "$dir/valgrind.log" >&2; exit 1; }
    python3 "$work/client.py" "$port" "$conns" "$rounds" "$pid"
    kill -INT "$pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local messages=$((conns * rounds))
    # The dump after the rounds: "summary:" holds its totals (Ir Dr Dw I1mr D1mr D1mw ...).
    awk -v n="$messages" '/^summary:/ { printf "%d %.1f %.1f\n", $2 / n, $6 / n, $7 / n }' "$dir"/out.*.1
}

echo
echo "| connections | server | instructions per message | L1 read misses | L1 write misses | ours / tokio (instructions) |"
echo "|---:|---|---:|---:|---:|---:|"
for conns in $CONNECTIONS; do
    rounds=${ROUNDS:-$(((10000 + conns - 1) / conns))}
    read -r ours_ir ours_r ours_w < <(measure ours "$conns" "$rounds" "$target/release/examples/echo" --mode pool)
    read -r tokio_ir tokio_r tokio_w < <(measure tokio "$conns" "$rounds" "$target/release/tokio_echo")
    ratio=$(python3 -c "print(f'{$ours_ir / $tokio_ir:.2f}×')")
    echo "| $conns | ours, pool (default) | $ours_ir | $ours_r | $ours_w | $ratio |"
    echo "| $conns | tokio, multi-threaded runtime | $tokio_ir | $tokio_r | $tokio_w | |"
done
echo
echo "(valgrind $(valgrind --version | cut -d- -f2), $(nproc) CPUs; the server's user space only: the kernel's share of a message is not counted)"
