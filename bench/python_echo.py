"""Python's own socketserver as an echo server, for the benchmark (bench/src/main.rs).

    python3 bench/python_echo.py --proto tcp|udp|unix --mode threading|sequential --addr ADDR

Prints `listening on tcp://IP:PORT` (or `udp://`, `unix://PATH`) like the crate's echo
example. Servers are the standard ones (ThreadingTCPServer, ThreadingUDPServer,
ThreadingUnixStreamServer, and TCPServer/UDPServer/UnixStreamServer for sequential) with
the usual settings: disable_nagle_algorithm = True (TCP), daemon_threads = True,
allow_reuse_address = True. request_queue_size is left at Python's default of 5 on
purpose: that is what a Python user gets.

SIGTERM/SIGINT call server.shutdown() from a helper thread (it waits for serve_forever,
which polls every 0.5 s), then server_close(); daemon request threads are not joined.
"""
import argparse
import os
import signal
import socketserver
import sys
import threading

BUF = 8192


class TcpEcho(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True

    def handle(self):
        sock = self.connection
        while True:
            data = sock.recv(BUF)
            if not data:
                return
            sock.sendall(data)


class UnixEcho(socketserver.BaseRequestHandler):
    # No disable_nagle_algorithm: TCP_NODELAY does not apply to AF_UNIX.
    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(BUF)
            if not data:
                return
            sock.sendall(data)


class UdpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def server_class(proto, mode):
    base = {
        ("tcp", "threading"): socketserver.ThreadingTCPServer,
        ("tcp", "sequential"): socketserver.TCPServer,
        ("udp", "threading"): socketserver.ThreadingUDPServer,
        ("udp", "sequential"): socketserver.UDPServer,
        ("unix", "threading"): socketserver.ThreadingUnixStreamServer,
        ("unix", "sequential"): socketserver.UnixStreamServer,
    }[(proto, mode)]

    class Server(base):
        allow_reuse_address = True
        daemon_threads = True

    return Server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto", choices=["tcp", "udp", "unix"], default="tcp")
    parser.add_argument("--mode", choices=["threading", "sequential"], default="threading")
    parser.add_argument("--addr", required=True)
    args = parser.parse_args()

    cls = server_class(args.proto, args.mode)
    if args.proto == "unix":
        server = cls(args.addr, UnixEcho)
        url = f"unix://{args.addr}"
    else:
        host, _, port = args.addr.rpartition(":")
        host = host.strip("[]")
        server = cls((host, int(port)), TcpEcho if args.proto == "tcp" else UdpEcho)
        bound = server.server_address
        url = f"{args.proto}://{bound[0]}:{bound[1]}"

    def on_signal(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(f"listening on {url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if args.proto == "unix":
            try:
                os.unlink(args.addr)
            except OSError:
                pass
    sys.exit(0)


if __name__ == "__main__":
    main()
