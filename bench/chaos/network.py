"""Hosts on one machine: a network namespace each, joined by veth pairs to one bridge.

Every name this module creates starts with PREFIX (namespaces `lc-<host>`, the bridge `lc-br`,
each host's veth end on the bridge `lc-<host>`), so `remove_leftovers` can delete what an
interrupted run left behind. Addresses are 10.213.0.0/24, private: the bridge holds .1 (the root
namespace, where the harness and the test hub live), hosts from .10 up.

Faults are made without netem or iptables (this kernel has neither): a host is cut off by taking
its veth end on the bridge down (nothing it sends arrives, nothing reaches it: a silent
partition, TCP connections stay open and retransmit), and two hosts are cut from each other by
blackhole routes on both sides (their packets are dropped; each stays reachable by the others).
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PREFIX = "lc-"
BRIDGE = f"{PREFIX}br"
SUBNET = "10.213.0"
BRIDGE_IP = f"{SUBNET}.1"
# Each `ip` command is quick; a hung one must not hang the harness.
IP_TIMEOUT_S = 10


def ip(*args: str, check: bool = True) -> str:
    """Run `ip <args>`; its output."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One namespace: its name, address, and the veth end on the bridge that carries its traffic."""

    name: str
    address: str
    cut_from: set[str] = field(default_factory=set)  # addresses blackholed on this host

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}{self.name}"

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program inside this host."""
        return ["ip", "netns", "exec", self.netns]


class Network:
    """The bridge and the hosts on it; partitions and heals."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}

    def create_bridge(self) -> None:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")

    def add_host(self, name: str) -> Host:
        if len(PREFIX + name) > 15:
            raise ValueError(f"host name {name!r} too long for an interface name")
        host = Host(name, f"{SUBNET}.{10 + len(self.hosts)}")
        inside = f"{PREFIX}{name}-n"[:15]
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.netns)
        ip("link", "set", host.veth, "master", BRIDGE, "up")
        ip("-n", host.netns, "link", "set", inside, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def isolate(self, host: Host) -> None:
        """Cut `host` off from every other host (its link to the bridge goes down)."""
        ip("link", "set", host.veth, "down")

    def rejoin(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")

    def cut(self, host: Host, others: list[Host]) -> None:
        """Drop every packet between `host` and each of `others`, both ways (blackhole routes)."""
        for other in others:
            for here, there in ((host, other), (other, host)):
                if there.address not in here.cut_from:
                    ip("-n", here.netns, "route", "add", "blackhole", f"{there.address}/32")
                    here.cut_from.add(there.address)

    def mend(self, host: Host, others: list[Host]) -> None:
        for other in others:
            for here, there in ((host, other), (other, host)):
                if there.address in here.cut_from:
                    ip("-n", here.netns, "route", "del", "blackhole", f"{there.address}/32", check=False)
                    here.cut_from.discard(there.address)

    def heal_all(self) -> None:
        """Every link up, every blackhole route gone."""
        for host in self.hosts.values():
            ip("link", "set", host.veth, "up", check=False)
            for address in list(host.cut_from):
                ip("-n", host.netns, "route", "del", "blackhole", f"{address}/32", check=False)
            host.cut_from.clear()


def remove_leftovers() -> list[str]:
    """Delete every namespace and link whose name starts with PREFIX; the names removed."""
    removed = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            ip("netns", "delete", name, check=False)  # its veth ends go with it
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                ip("link", "delete", name, check=False)
                removed.append(name)
    if removed:
        log.info("removed leftovers: %s", ", ".join(removed))
    return removed
