"""IPsec ESP for encrypted overlay networks: the SAs and policies the kernel is asked for (pure, no pyroute2).

Shape (the one Docker's overlay driver uses, per network instead of per cluster):

- Between two nodes A and B, for each key generation of the network, one SA per direction
  (A->B and B->A), ESP in transport mode, AEAD ``rfc4106(gcm(aes))`` with a 128-bit key, a 4-byte salt and a
  128-bit ICV.  Each SA gets its own key and salt, derived from the network's generation key with HMAC-SHA256
  over (VNI, generation, source, destination): no two SAs share a GCM key/nonce space.
- One *out* policy per peer: UDP from the local underlay address to the peer's, destination port = the VXLAN
  port, matching the network's firewall mark; its template names the SPI of the generation being sent with.
  Switching the template's SPI (XFRM_MSG_UPDPOLICY) is the atomic "send with the new key" step of a rotation.
- Inbound needs no policy: the kernel finds the SA by (destination, SPI) and decrypts; the firewall drops
  cleartext VXLAN of an encrypted VNI (see :mod:`netd.drivers.overlay_crypto`).

Ownership: every SA and policy netd makes has a reqid ``0x6E<VNI>`` (top byte 0x6E, "n"), and every policy the
mark ``0x6E<VNI>``/0xffffffff; objects with another reqid are never read back as netd's, so foreign IPsec
configuration (strongSwan, libreswan, Docker's 0xD0C4E3) is never touched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

Addr = IPv4Address | IPv6Address

AEAD_ALGO = "rfc4106(gcm(aes))"
KEY_BYTES = 16  # AES-128
SALT_BYTES = 4
ICV_BITS = 128
MASTER_KEY_BYTES = 32  # what is stored (in etcd) per network and generation
VXLAN_PORT = 4789
IPPROTO_UDP = 17
OWNER_TAG = 0x6E  # top byte of reqid and mark: "n" for netd
FULL_MASK = 0xFFFFFFFF
MIN_SPI = 0x100  # SPIs 1-255 are reserved by IANA
GEN_BITS = 4  # the low bits of an SPI carry the generation, so two consecutive generations never collide
VNI_MAX = 0xFFFFFF
# what ESP adds to a VXLAN packet (header 8, IV 8, ICV 16, trailer 2 + padding up to 3, rounded up): an encrypted
# overlay's default MTU is the plain one minus this (Docker subtracts its ESP expansion likewise)
ESP_OVERHEAD = 40


def owner_tag(vni: int) -> int:
    """reqid of every SA/policy and mark of every policy for the network with this VNI."""
    if not 1 <= vni <= VNI_MAX:
        raise ValueError(f"vni {vni}: must be 1-{VNI_MAX}")
    return (OWNER_TAG << 24) | vni


def is_owned(reqid: int) -> bool:
    return reqid >> 24 == OWNER_TAG and reqid & VNI_MAX != 0


def vni_of(reqid: int) -> int:
    return reqid & VNI_MAX


@dataclass(frozen=True)
class EspSA:
    """One direction of one node pair for one key generation."""

    src: Addr
    dst: Addr
    spi: int
    key: bytes = field(repr=False)  # 16 bytes
    salt: bytes = field(repr=False)  # 4 bytes
    reqid: int
    icv_bits: int = ICV_BITS
    algo: str = AEAD_ALGO
    mode: Literal["transport"] = "transport"

    @property
    def ident(self) -> tuple[Addr, int]:
        """What the kernel keys an SA by (with the protocol, always ESP here)."""
        return (self.dst, self.spi)

    def __str__(self) -> str:
        return f"esp {self.src}->{self.dst} spi 0x{self.spi:08x} reqid 0x{self.reqid:08x}"


@dataclass(frozen=True)
class EspPolicy:
    """``dir out``: UDP src->dst:dport with the network's mark goes through ESP with SPI ``tmpl_spi``."""

    src: Addr
    dst: Addr
    tmpl_spi: int
    reqid: int
    mark: int
    mark_mask: int = FULL_MASK
    dport: int = VXLAN_PORT
    proto: int = IPPROTO_UDP
    direction: Literal["out"] = "out"
    priority: int = 0

    @property
    def ident(self) -> tuple[Addr, Addr, int, int, int, str]:
        """What the kernel keys a policy by: its selector, mark and direction (not the template)."""
        return (self.src, self.dst, self.dport, self.mark, self.mark_mask, self.direction)

    def __str__(self) -> str:
        return (
            f"policy out {self.src}->{self.dst} udp/{self.dport} mark 0x{self.mark:08x} spi 0x{self.tmpl_spi:08x}"
        )


@dataclass(frozen=True)
class KeyRing:
    """A network's keys as one node must hold them: ``keys`` by generation, ``tx`` the generation sent with.

    Every generation in ``keys`` is accepted on receive; only ``tx`` is used to send."""

    vni: int
    keys: tuple[tuple[int, bytes], ...]  # (generation, master key), sorted by generation
    tx: int

    def __post_init__(self) -> None:
        gens = [g for g, _ in self.keys]
        if self.tx not in gens:
            raise ValueError(f"key ring of vni {self.vni}: tx generation {self.tx} has no key")
        if len(set(gens)) != len(gens):
            raise ValueError(f"key ring of vni {self.vni}: a generation appears twice")
        for gen, key in self.keys:
            if len(key) != MASTER_KEY_BYTES:
                raise ValueError(f"key ring of vni {self.vni}: key {gen} is not {MASTER_KEY_BYTES} bytes")

    @property
    def generations(self) -> tuple[int, ...]:
        return tuple(g for g, _ in self.keys)

    def key(self, gen: int) -> bytes:
        return dict(self.keys)[gen]

    def __repr__(self) -> str:  # never print keys
        return f"KeyRing(vni={self.vni}, generations={self.generations}, tx={self.tx})"


def new_master_key() -> bytes:
    return secrets.token_bytes(MASTER_KEY_BYTES)


def new_ring(vni: int, gen: int = 1) -> KeyRing:
    return KeyRing(vni, ((gen, new_master_key()),), gen)


def _flow(vni: int, gen: int, src: Addr, dst: Addr, epoch: int) -> bytes:
    return b"netd-esp|%d|%d|%s|%s|%d" % (vni, gen, src.packed.hex().encode(), dst.packed.hex().encode(), epoch)


def derive_spi(vni: int, gen: int, src: Addr, dst: Addr, epoch: int = 0) -> int:
    """The SPI of the SA src->dst of generation ``gen``: every node computes the same value.

    ``epoch`` is the *sender's* incarnation (e.g. its registration revision in the cluster store): a sender
    that restarts with an empty kernel starts its sequence numbers at 1 again, which the receiver's replay
    window would drop on the old SA (measured in the VM); a new epoch gives new SAs on both ends.

    The low 4 bits are the generation (so the SA of the next generation of the same flow never has the same
    SPI); the other 28 bits a hash of (VNI, generation, direction).  Collisions between different flows to the
    same destination are possible (~n^2/2^29) and caught by :func:`check_spis` before anything is applied."""
    digest = hashlib.blake2b(_flow(vni, gen, src, dst, epoch), digest_size=4, person=b"netd-spi").digest()
    high = int.from_bytes(digest, "big") >> GEN_BITS
    spi = (high << GEN_BITS) | (gen % (1 << GEN_BITS))
    return spi if spi >= MIN_SPI else spi | (1 << 31)


def derive_sa_key(master: bytes, vni: int, gen: int, src: Addr, dst: Addr, epoch: int = 0) -> tuple[bytes, bytes]:
    """(AES key, salt) of one SA, derived from the generation's master key."""
    out = hmac.new(master, _flow(vni, gen, src, dst, epoch), hashlib.sha256).digest()
    return out[:KEY_BYTES], out[KEY_BYTES : KEY_BYTES + SALT_BYTES]


def build_sa(ring: KeyRing, gen: int, src: Addr, dst: Addr, epoch: int = 0) -> EspSA:
    """The SA src->dst of generation ``gen``; ``epoch`` is the sender's (see :func:`derive_spi`)."""
    key, salt = derive_sa_key(ring.key(gen), ring.vni, gen, src, dst, epoch)
    return EspSA(src, dst, derive_spi(ring.vni, gen, src, dst, epoch), key, salt, owner_tag(ring.vni))


@dataclass(frozen=True)
class DesiredXfrm:
    sas: frozenset[EspSA]
    policies: frozenset[EspPolicy]


def build_xfrm(
    ring: KeyRing,
    local: Addr,
    peers: Collection[Addr] | Mapping[Addr, int],
    port: int = VXLAN_PORT,
    local_epoch: int = 0,
) -> DesiredXfrm:
    """What one node holds for one encrypted network: SAs of every generation both ways, one out policy per peer.

    ``peers`` may map each peer to its epoch (default 0).  Both directions of every generation are installed
    (an outbound SA that no policy names yet costs nothing and makes the switch to a new generation one policy
    update)."""
    epochs = dict(peers) if isinstance(peers, Mapping) else dict.fromkeys(peers, 0)
    sas: set[EspSA] = set()
    pols: set[EspPolicy] = set()
    tag = owner_tag(ring.vni)
    for peer in sorted(epochs, key=str):
        if peer == local:
            continue
        if peer.version != local.version:
            raise ValueError(f"peer {peer}: not the IP version of the local address {local}")
        for gen in ring.generations:
            sas.add(build_sa(ring, gen, local, peer, local_epoch))
            sas.add(build_sa(ring, gen, peer, local, epochs[peer]))
        tx_spi = derive_spi(ring.vni, ring.tx, local, peer, local_epoch)
        pols.add(EspPolicy(local, peer, tx_spi, tag, tag, dport=port))
    return DesiredXfrm(frozenset(sas), frozenset(pols))


def merge(*parts: DesiredXfrm) -> DesiredXfrm:
    return DesiredXfrm(frozenset().union(*(p.sas for p in parts)), frozenset().union(*(p.policies for p in parts)))


def check_spis(sas: frozenset[EspSA] | set[EspSA]) -> None:
    """Two SAs with the same (destination, SPI) cannot both exist: say which and what to do."""
    seen: dict[tuple[Addr, int], EspSA] = {}
    for sa in sorted(sas, key=str):
        other = seen.get(sa.ident)
        if other is not None and other != sa:
            raise ValueError(
                f"SPI 0x{sa.spi:08x} to {sa.dst} is derived for two flows ({other} and {sa}); "
                "rotate the key of one of the networks (netd-ctl network rotate-key NAME) to derive new SPIs"
            )
        seen[sa.ident] = sa
