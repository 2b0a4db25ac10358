"""Where the ranks run: N local ranks on 127.0.0.1, or the hosts of an ``mlx.launch`` hostfile.

The ring backend has no authentication: whoever reaches a rank's port can feed it tensors. So
local ranks listen on loopback only, and a hostfile must name either only loopback addresses or
only remote ones (a mix would open loopback ranks to the network through their remote
neighbours). Pure data: no MLX, no processes here.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import InvalidRequestError

BACKENDS = ("ring", "jaccl", "mpi")
MAX_RANKS = 64
MAX_HOSTFILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Host:
    """One rank's machine: how to reach it by ssh and the IPs its ring sockets use."""

    ssh: str
    ips: tuple[str, ...]
    rdma: tuple[str | None, ...] = ()

    @property
    def local(self) -> bool:
        return all(ipaddress.ip_address(ip).is_loopback for ip in self.ips)


@dataclass(frozen=True)
class Hosts:
    """Every rank's host (rank i on ``hosts[i]``) and the backend joining them."""

    hosts: tuple[Host, ...]
    backend: str = "ring"

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def local(self) -> bool:
        return all(h.local for h in self.hosts)

    def names(self) -> list[str]:
        return [h.ssh for h in self.hosts]


def local_hosts(ranks: int, backend: str = "ring") -> Hosts:
    """``ranks`` ranks on this machine, over loopback."""
    check_backend(backend)
    if not 2 <= ranks <= MAX_RANKS:
        raise InvalidRequestError(f"shards must be between 2 and {MAX_RANKS}, not {ranks}")
    return Hosts(tuple(Host("127.0.0.1", ("127.0.0.1",)) for _ in range(ranks)), backend)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InvalidRequestError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def _ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError as exc:
        raise InvalidRequestError(f"hostfile: {str(value)[:60]!r} is not an IP address") from exc


def parse_hostfile(text: str, backend: str | None = None) -> Hosts:
    """``mlx.launch``'s hostfile: a list of hosts, or {"backend", "envs", "hosts"}; each host
    {"ssh": name, "ips": [...], "rdma": [...]}."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"hostfile is not JSON: {exc}") from exc
    entries = data.get("hosts") if isinstance(data, dict) else data
    chosen = backend or (data.get("backend") if isinstance(data, dict) else None) or "ring"
    check_backend(chosen)
    if not isinstance(entries, list) or not 2 <= len(entries) <= MAX_RANKS:
        raise InvalidRequestError(f"hostfile must list between 2 and {MAX_RANKS} hosts")
    hosts = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("ssh"), str):
            raise InvalidRequestError(f"hostfile: host {n} needs an 'ssh' name")
        ips = entry.get("ips") or []
        if not isinstance(ips, list) or not ips:
            raise InvalidRequestError(f"hostfile: host {n} needs 'ips' (the ring needs IPs)")
        rdma = entry.get("rdma") or []
        hosts.append(Host(entry["ssh"], tuple(_ip(ip) for ip in ips), tuple(rdma)))
    parsed = Hosts(tuple(hosts), chosen)
    check_network(parsed)
    return parsed


def read_hostfile(path: str | Path, backend: str | None = None) -> Hosts:
    file = Path(path)
    if not file.is_file():
        raise InvalidRequestError(f"hostfile {str(path)[:200]} is not a regular file")
    if file.stat().st_size > MAX_HOSTFILE_BYTES:
        raise InvalidRequestError("hostfile is larger than 1 MiB")
    return parse_hostfile(file.read_text(encoding="utf-8", errors="replace"), backend)


def check_network(hosts: Hosts) -> None:
    """Loopback only, or remote only: never a mix."""
    kinds = {h.local for h in hosts.hosts}
    if len(kinds) > 1:
        raise InvalidRequestError(
            "hostfile mixes loopback and remote hosts: a loopback rank would be reachable from "
            "the network through its remote neighbours; list only remote IPs (all on one "
            "private network) or only 127.0.0.1"
        )


def free_ports(count: int, ip: str = "127.0.0.1") -> list[int]:
    """Ports free right now on ``ip`` (the kernel's choice, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ip, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ring_hostfile(hosts: Hosts, starting_port: int | None = None) -> str:
    """The ring backend's MLX_HOSTFILE: per rank, "ip:port" of each of its IPs, as
    ``mlx.launch`` writes it (local ranks get free loopback ports)."""
    if hosts.local:
        ports = free_ports(hosts.size)
        return json.dumps([[f"127.0.0.1:{p}"] for p in ports])
    port = starting_port or 32323
    nodes = []
    for host in hosts.hosts:
        node = []
        for ip in host.ips:
            node.append(f"{ip}:{port}")
            port += 1
        nodes.append(node)
    return json.dumps(nodes)
