"""Python's socketserver, measured the way benches/lifecycle.rs measures ours.

Prints one JSON object: shutdown latency (ms, idle server, 20 tries) and idle
wakeups/CPU of the serve thread over a fixed window.
"""
import json
import os
import socketserver
import sys
import threading
import time

TRIES = int(sys.argv[1]) if len(sys.argv) > 1 else 20
IDLE_SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        pass


def task_stats(tid):
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    switches = 0
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return ticks, switches


def shutdown_latency():
    samples = []
    for _ in range(TRIES):
        server = socketserver.TCPServer(("127.0.0.1", 0), Echo)
        t = threading.Thread(target=server.serve_forever)
        t.start()
        time.sleep(0.02)
        start = time.perf_counter()
        server.shutdown()  # returns once serve_forever has returned
        samples.append((time.perf_counter() - start) * 1000)
        t.join()
        server.server_close()
    return samples


def idle():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    tid = []
    ready = threading.Event()

    def serve():
        tid.append(threading.get_native_id())
        ready.set()
        server.serve_forever()

    t = threading.Thread(target=serve)
    t.start()
    ready.wait()
    time.sleep(0.1)
    ticks0, sw0 = task_stats(tid[0])
    time.sleep(IDLE_SECONDS)
    ticks1, sw1 = task_stats(tid[0])
    server.shutdown()
    t.join()
    server.server_close()
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "wakeups_per_s": (sw1 - sw0) / IDLE_SECONDS,
        "cpu_ms_per_s": (ticks1 - ticks0) * 1000 / hz / IDLE_SECONDS,
    }


print(json.dumps({"shutdown_ms": shutdown_latency(), "idle": idle(), "version": sys.version.split()[0]}))
