"""CNI CHECK: read the container's namespace back (interface, MAC, addresses, default routes), stdlib only.

The plugin is a short-lived single-threaded process, so it may ``setns()`` itself into the container's network
namespace; ``/proc/self/net`` and ioctls then describe that namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNET = 0x40000000
SIOCGIFHWADDR = 0x8927
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B


def _enter(netns: str) -> None:
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _ioctl(ifname: str, request: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s.fileno(), request, struct.pack("256s", ifname.encode()[:15]))


def _ipv4(ifname: str) -> str | None:
    try:
        addr = socket.inet_ntoa(_ioctl(ifname, SIOCGIFADDR)[20:24])
        mask = socket.inet_ntoa(_ioctl(ifname, SIOCGIFNETMASK)[20:24])
    except OSError:
        return None
    return str(ipaddress.IPv4Interface(f"{addr}/{mask}"))


def _ipv6(ifname: str) -> set[str]:
    out = set()
    try:
        with open("/proc/self/net/if_inet6") as f:
            for line in f:
                hexaddr, _idx, plen, _scope, _flags, name = line.split()
                if name == ifname:
                    addr = ipaddress.IPv6Address(bytes.fromhex(hexaddr))
                    out.add(str(ipaddress.IPv6Interface(f"{addr}/{int(plen, 16)}")))
    except OSError:
        pass
    return out


def _default_v4(ifname: str) -> set[str]:
    gws = set()
    with open("/proc/self/net/route") as f:
        next(f, None)
        for line in f:
            fields = line.split()
            if fields[0] == ifname and fields[1] == "00000000" and fields[7] == "00000000":
                gws.add(socket.inet_ntoa(struct.pack("<I", int(fields[2], 16))))
    return gws


def _default_v6(ifname: str) -> set[str]:
    gws = set()
    try:
        with open("/proc/self/net/ipv6_route") as f:
            for line in f:
                fields = line.split()
                if fields[9] == ifname and fields[0] == "0" * 32 and fields[1] == "00":
                    gws.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[4]))))
    except OSError:
        pass
    return gws


def check_namespace(netns: str, ifname: str, ep: dict[str, Any], prev: Any) -> list[str]:
    """What is missing or different inside ``netns`` compared with netd's endpoint (and the ADD result)."""
    try:
        _enter(netns)
    except OSError as e:
        return [f"cannot enter {netns}: {e.strerror or e}"]
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return [f"interface {ifname} is missing"]
    problems = []
    mac = _ioctl(ifname, SIOCGIFHWADDR)[18:24].hex(":")
    if ep.get("MacAddress") and mac != ep["MacAddress"].lower():
        problems.append(f"{ifname} has MAC {mac}, expected {ep['MacAddress']}")
    want4, want6 = ep.get("IPv4Address") or "", ep.get("IPv6Address") or ""
    if want4 and _ipv4(ifname) != want4:
        problems.append(f"address {want4} is missing on {ifname}")
    if want6 and want6 not in _ipv6(ifname):
        problems.append(f"address {want6} is missing on {ifname}")
    if ep.get("Gateway") and ep["Gateway"] not in _default_v4(ifname):
        problems.append(f"default route via {ep['Gateway']} is missing")
    if ep.get("IPv6Gateway") and ep["IPv6Gateway"] not in _default_v6(ifname):
        problems.append(f"IPv6 default route via {ep['IPv6Gateway']} is missing")
    if isinstance(prev, dict):
        have = {want4, want6}
        for ip in prev.get("ips") or []:
            if isinstance(ip, dict) and ip.get("address") and ip["address"] not in have:
                problems.append(f"the ADD result's address {ip['address']} is no longer netd's")
    return problems
