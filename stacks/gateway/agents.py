#!/usr/bin/env python3
"""The Consul agents the gateway's dnsmasq forwards to, kept true every second (stacks/gateway/entrypoint.sh).

    fleet-agents SERVERS-FILE [DNSMASQ-PID]

The agents are the tasks of the services CONSUL_DNS_HOST names (space-separated: the stack's servers and
client agents), as Swarm's DNS lists them now. The agent of this gateway's own node (FLEET_NODE, looked
up as `<node>.node.consul` in Consul's DNS) comes first, then the others; an agent whose DNS port does
not take a connection goes last. dnsmasq runs with --strict-order, so it asks its own node's agent and
moves down the list only when that one does not answer. The file is rewritten, and dnsmasq sent SIGHUP,
only when the order changes. Standard library only: the gateway image has no other Python.
"""
import os
import random
import signal
import socket
import struct
import sys
import time

NAMES = os.environ.get("CONSUL_DNS_HOST", "consul").split()
PORT = int(os.environ.get("CONSUL_DNS_PORT", "8600"))
NODE = os.environ.get("FLEET_NODE", "")


def addresses() -> list[str]:
    found: set[str] = set()
    for name in NAMES:
        try:
            found.update(a[4][0] for a in socket.getaddrinfo(name, PORT, socket.AF_INET, socket.SOCK_STREAM))
        except socket.gaierror:
            pass
    return sorted(found)


def query_a(server: str, name: str, timeout: float = 0.5) -> list[str]:
    """The A records `server`'s DNS (on PORT) gives `name`; [] on no answer."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (server, PORT))
            reply = s.recv(4096)
        except OSError:
            return []
    got, _, count = struct.unpack(">HHH", reply[:6])
    if got != ident or count == 0:
        return []
    at, answers = 12 + len(question) + 4, []
    for _ in range(struct.unpack(">H", reply[6:8])[0]):
        while reply[at] and reply[at] < 0xC0:  # the name: labels, ended by 0 or a pointer
            at += reply[at] + 1
        at += 2 if reply[at] >= 0xC0 else 1
        kind, _, _, size = struct.unpack(">HHIH", reply[at:at + 10])
        if kind == 1 and size == 4:
            answers.append(socket.inet_ntoa(reply[at + 10:at + 14]))
        at += 10 + size
    return answers


def answers(address: str) -> bool:
    try:
        socket.create_connection((address, PORT), timeout=1).close()
        return True
    except OSError:
        return False


def order(known: list[str], own: str | None) -> list[str]:
    """Own agent first, then the others; the first demoted to last when its DNS port refuses."""
    ranked = ([own] if own in known else []) + [a for a in known if a != own]
    if len(ranked) > 1 and not answers(ranked[0]):
        ranked = ranked[1:] + ranked[:1]
    return ranked


def catches_hangup(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGHUP now (its SigCgt mask). A SIGHUP that reaches dnsmasq before
    its handler is installed ends it (the default action): on a busy node the list changed that soon after
    dnsmasq started, and the gateway answered 503 "No server is available" for good."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next((int(line.split()[1], 16) for line in f if line.startswith("SigCgt:")), 0)
    except OSError:
        return False
    return bool(mask >> (signal.SIGHUP - 1) & 1)


def listed(path: str) -> list[str] | None:
    """The agents the servers file at `path` lists now, in order (None when there is none)."""
    try:
        with open(path) as f:
            return [line.split("/", 2)[2].split("#")[0] for line in f if line.startswith("server=/")]
    except OSError:
        return None


def main() -> None:
    path, dnsmasq = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    # dnsmasq started with the file as it is: a list changed from there on is sent, not the same one again
    written, own, deadline = (listed(path) if dnsmasq else None), None, time.monotonic() + 120
    while True:
        known = addresses()
        if NODE and own not in known:
            own = next((a for server in known for a in query_a(server, f"{NODE}.node.consul")), None)
        ranked = order(known, own)
        # a change waits (a second at a time) until dnsmasq can take the signal that makes it read the file again
        if ranked and ranked != written and (dnsmasq is None or catches_hangup(dnsmasq)):
            with open(path + ".new", "w") as f:
                f.writelines(f"server=/consul/{a}#{PORT}\n" for a in ranked)
            os.replace(path + ".new", path)
            if dnsmasq:
                os.kill(dnsmasq, signal.SIGHUP)
            print(f"gateway: Consul DNS at {', '.join(ranked)} (own node's agent: {own or 'not known'})",
                  file=sys.stderr, flush=True)
            written = ranked
        if dnsmasq is None and written:
            return  # the first list, for dnsmasq's start
        if dnsmasq is None and time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(1)


if __name__ == "__main__":
    main()
