"""The key layout in etcd (pure).  Every key lives under ``[cluster] key_prefix`` (default ``/netd/v1``); a
schema change gets a new prefix (``/netd/v2``) so that old and new daemons never read each other's values.

=====================================  ====================  ===================================================
key (under the prefix)                 value (``records``)   lifetime
=====================================  ====================  ===================================================
``/nodes/<node>``                      NodeRecord            persistent: written at registration, refreshed
                                                             every minute (``last_seen``), removed by ``node rm``
``/alive/<node>``                      NodeAlive             under the node's lease: present == the node is alive
``/networks/<network id>``             OverlayNetwork        from ``network create`` to ``network rm``
``/network-names/<name>``              NameReservation       the same: a name is unique in the cluster
``/vnis/<vni, 8 digits>``              VniReservation        the same: a VNI is unique
``/subnets/<address>_<prefixlen>``     SubnetReservation     the same: overlay subnets never overlap
``/addresses/<network id>/<address>``  Allocation            created with "fails if the key exists"; NOT under a
                                                             lease: held until its endpoint goes or ``node rm``
``/endpoints/<network id>/<ep id>``    EndpointRecord        from connect to disconnect (or ``node rm``)
``/services/<service id>``             ServiceRecord         from ``service create`` to ``service rm``
``/service-names/<name>``              ServiceName           the same: a service name is unique in the cluster
``/ingress/network``                   NameReservation       the ingress network's id, from its create to its rm:
                                                             created "if absent", so one ingress per cluster
``/keys/<network id>``                 NetworkKeys           an encrypted network's keys and rotation stage
``/key-acks/<network id>/<node>``      KeyAck                under the node's lease: the rotation step it applied
=====================================  ====================  ===================================================

Keys are text; names are validated before they get here (node and network names use ``[A-Za-z0-9_.-]``), so
no part contains ``/``.  Per-network prefixes make "every endpoint of a network" one range read and let
``network rm`` check "no endpoint left" inside its transaction (a range compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Literal

from netd.core.model import IPAddress, IPNetwork

Kind = Literal[
    "node",
    "alive",
    "network",
    "network_name",
    "vni",
    "subnet",
    "address",
    "endpoint",
    "service",
    "service_name",
    "key",
    "key_ack",
]

_SECTIONS: dict[str, Kind] = {
    "nodes": "node",
    "alive": "alive",
    "networks": "network",
    "network-names": "network_name",
    "vnis": "vni",
    "subnets": "subnet",
    "addresses": "address",
    "endpoints": "endpoint",
    "services": "service",
    "service-names": "service_name",
    "keys": "key",
    "key-acks": "key_ack",
}
_TWO_PART: frozenset[Kind] = frozenset({"address", "endpoint", "key_ack"})


@dataclass(frozen=True)
class ParsedKey:
    """What a key names: its kind and its one or two identifying parts (``parent`` is the network id of
    address and endpoint keys)."""

    kind: Kind
    name: str
    parent: str | None = None


def subnet_token(subnet: IPNetwork) -> str:
    return f"{subnet.network_address}_{subnet.prefixlen}"


def parse_subnet_token(token: str) -> IPNetwork:
    addr, _, plen = token.rpartition("_")
    return ip_network(f"{addr}/{plen}")


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = "/netd/v1"

    def _k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # whole sections (for range reads, watches and range compares); each ends with "/"
    def root(self) -> str:
        return self.prefix + "/"

    def section(self, name: str) -> str:
        return self._k(name) + "/"

    def node(self, name: str) -> str:
        return self._k("nodes", name)

    def alive(self, name: str) -> str:
        return self._k("alive", name)

    def network(self, net_id: str) -> str:
        return self._k("networks", net_id)

    def network_name(self, name: str) -> str:
        return self._k("network-names", name)

    def vni(self, vni: int) -> str:
        return self._k("vnis", f"{vni:08d}")

    def subnet(self, subnet: IPNetwork) -> str:
        return self._k("subnets", subnet_token(subnet))

    def addresses_of(self, net_id: str) -> str:
        return self._k("addresses", net_id) + "/"

    def address(self, net_id: str, addr: IPAddress) -> str:
        return self._k("addresses", net_id, str(addr))

    def endpoints_of(self, net_id: str) -> str:
        return self._k("endpoints", net_id) + "/"

    def endpoint(self, net_id: str, ep_id: str) -> str:
        return self._k("endpoints", net_id, ep_id)

    def service(self, service_id: str) -> str:
        return self._k("services", service_id)

    def service_name(self, name: str) -> str:
        return self._k("service-names", name)

    def ingress(self) -> str:
        """Not a kind the cache parses: read and compared in transactions only (one ingress network)."""
        return self._k("ingress", "network")

    def network_key(self, net_id: str) -> str:
        return self._k("keys", net_id)

    def key_acks_of(self, net_id: str) -> str:
        return self._k("key-acks", net_id) + "/"

    def key_ack(self, net_id: str, node: str) -> str:
        return self._k("key-acks", net_id, node)

    def parse(self, key: str) -> ParsedKey | None:
        """The kind and parts of a key of this layout; None for anything else (another prefix, a stray key)."""
        if not key.startswith(self.root()):
            return None
        parts = key[len(self.root()) :].split("/")
        kind = _SECTIONS.get(parts[0])
        if kind is None:
            return None
        want = 3 if kind in _TWO_PART else 2
        if len(parts) != want or not all(parts[1:]):
            return None
        if kind in _TWO_PART:
            return ParsedKey(kind, parts[2], parent=parts[1])
        return ParsedKey(kind, parts[1])


def address_of_key(parsed: ParsedKey) -> IPAddress:
    return ip_address(parsed.name)
