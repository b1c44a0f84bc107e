#!/usr/bin/env python3
"""A UDP relay that can partition the path it carries, for process tests.

    udp_relay.py LISTEN_PORT TARGET_PORT     (both on 127.0.0.1)

Datagrams from a client to LISTEN_PORT go to TARGET_PORT from a socket
of the relay's own, one per client address, so the target answers through
the relay; its answers go back to the client.  SIGUSR1 starts dropping
everything, both ways (a partition); SIGUSR2 heals it.  SIGHUP closes
every client's socket, as a NAT forgets its mappings: the target's
datagrams to the old ones are lost, and a client's next datagram goes out
from a new port.  Every line on stdout is "<event> <wall clock seconds>":

    ready    listening
    drop     the partition started
    heal     the partition ended
    first    the first datagram forwarded after a heal (either way)
    forget   the mappings were dropped

A test measures recovery from "first": before it, nothing could have got
through, whatever the peers' timers were doing.
"""
import selectors
import signal
import socket
import sys
import time

HOST = "127.0.0.1"


def say(what):
    print(f"{what} {time.time():.6f}", flush=True)


def main():
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    target = (HOST, target_port)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind((HOST, listen_port))
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    upstream = {}  # client address -> socket towards the target
    state = {"drop": False, "await_first": False}

    def on_drop(_sig, _frame):
        state["drop"] = True
        state["await_first"] = False
        say("drop")

    def on_heal(_sig, _frame):
        state["drop"] = False
        state["await_first"] = True
        say("heal")

    def on_forget(_sig, _frame):
        for up in upstream.values():
            sel.unregister(up)
            up.close()
        upstream.clear()
        say("forget")

    signal.signal(signal.SIGHUP, on_forget)
    signal.signal(signal.SIGUSR1, on_drop)
    signal.signal(signal.SIGUSR2, on_heal)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    say("ready")

    def forward(sock, data, to):
        if state["drop"]:
            return
        if state["await_first"]:
            state["await_first"] = False
            say("first")
        try:
            sock.sendto(data, to)
        except OSError:
            pass  # the peer is down (ICMP unreachable): like a loss

    while True:
        for key, _ in sel.select():
            sock, client = key.fileobj, key.data
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:
                continue
            if client is None:
                up = upstream.get(addr)
                if up is None:
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind((HOST, 0))
                    upstream[addr] = up
                    sel.register(up, selectors.EVENT_READ, addr)
                forward(up, data, target)
            else:
                forward(front, data, client)


if __name__ == "__main__":
    main()
