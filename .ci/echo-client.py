#!/usr/bin/env python3
"""Starts an echo server command, reads its "listening on PROTO://ADDR" line, and checks
that it echoes: two TCP clients, one after the other (or three datagrams, then 1,600
from eight clients at once). Then it asks
the server to stop as Ctrl-C does (SIGINT, which Wine turns into CTRL_C_EVENT) with a TCP
client still connected: new connections must be refused at once in threading mode (in
sequential and pool modes the serve loops run the requests themselves, and outside
Linux the socket is closed, and refuses, only once they return). The connected client,
echoed once and silent since, is still served in threading mode, where it has a thread
of its own; in sequential and pool modes it waits parked in the poller, idle, and idle
parked connections are closed at once at a shutdown (as nginx and Go close idle
keep-alive connections), so it must see its connection end, promptly. Either way the
server must exit 0.

Usage: echo-client.py tcp|udp COMMAND...   Exits non-zero, saying why, on any failure.
"""
import socket
import subprocess
import sys
import signal
import threading
import time

proto, command = sys.argv[1], sys.argv[2:]
server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
timer = threading.Timer(60, server.kill)  # nothing waits for ever
timer.start()
try:
    line = server.stdout.readline().strip()
    prefix = proto + "://"
    if not line.startswith("listening on " + prefix):
        sys.exit(f"echo {command[2:]}: expected 'listening on {prefix}...', got {line!r}; "
                 f"stderr: {server.stderr.read() if server.poll() is not None else ''}")
    host, port = line[len("listening on " + prefix):].rsplit(":", 1)
    addr = (host, int(port))
    if proto == "tcp":
        for n in range(2):
            client = socket.create_connection(addr, timeout=10)
            message = f"hello {n}\n".encode()
            client.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = client.recv(100)
                if not chunk:
                    break
                got += chunk
            if got != message:
                sys.exit(f"echo {command[2:]}: sent {message!r}, got {got!r}")
            client.shutdown(socket.SHUT_WR)
            if client.recv(100) != b"":
                sys.exit(f"echo {command[2:]}: the server did not end the stream after the client's")
            client.close()
    else:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(10)
        for n in range(3):
            message = f"datagram {n}".encode()
            client.sendto(message, addr)
            got, _ = client.recvfrom(100)
            if got != message:
                sys.exit(f"echo {command[2:]}: sent {message!r}, got {got!r}")
        # Eight clients at once, 200 datagrams each, one in flight each: every one is
        # answered (under Wine a pool's replies were refused with "would block" while
        # another worker waited for the socket, and 28 of 1,600 were lost).
        unanswered = []

        def burst(c):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            for i in range(200):
                message = f"burst {c}-{i}".encode()
                s.sendto(message, addr)
                try:
                    while s.recvfrom(100)[0] != message:
                        pass
                except socket.timeout:
                    unanswered.append(message)
            s.close()

        clients = [threading.Thread(target=burst, args=(c,)) for c in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        if unanswered:
            sys.exit(f"echo {command[2:]}: {len(unanswered)} of 1600 datagrams unanswered, the first {unanswered[:3]}")
    stay = socket.create_connection(addr, timeout=10) if proto == "tcp" else None
    if stay is not None:
        # One echo first, so that the server has accepted it (a connection still in the
        # backlog at the stop is a new one, refused: reset when the socket closes).
        stay.sendall(b"first\n")
        if stay.recv(100) != b"first\n":
            sys.exit(f"echo {command[2:]}: the last client was not echoed before Ctrl-C")
    server.send_signal(signal.SIGINT)
    if stay is not None and "threading" in command:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(addr, timeout=1).close()
            except ConnectionRefusedError:
                break
            if time.monotonic() > deadline:
                sys.exit(f"echo {command[2:]}: new connections still accepted 5 s after Ctrl-C")
            time.sleep(0.05)
    if stay is not None and "threading" in command:
        stay.sendall(b"still here\n")
        if stay.recv(100) != b"still here\n":
            sys.exit(f"echo {command[2:]}: the connected client was not served after Ctrl-C")
        stay.close()
    elif stay is not None:
        # Parked and idle: closed by the shutdown (end of stream, or a reset), never
        # left waiting.
        try:
            ended = stay.recv(100)
        except (ConnectionResetError, ConnectionAbortedError):
            ended = b""
        except socket.timeout:
            sys.exit(f"echo {command[2:]}: an idle parked connection was kept 10 s after Ctrl-C")
        if ended != b"":
            sys.exit(f"echo {command[2:]}: after Ctrl-C the idle client got {ended!r}, not the end of its stream")
        stay.close()
    try:
        status = server.wait(10)
    except subprocess.TimeoutExpired:
        sys.exit(f"echo {command[2:]}: still running 10 s after Ctrl-C")
    if status != 0:
        sys.exit(f"echo {command[2:]}: exit status {status} after Ctrl-C; stderr: {server.stderr.read()}")
    print(f"echo {' '.join(command[2:])}: ok, and Ctrl-C ends it cleanly")
finally:
    timer.cancel()
    server.kill()
    server.wait()
