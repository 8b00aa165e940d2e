"""What a new network looks like: a create request's pools checked and completed (automatic subnets clear of
the other networks and the host's routes), then filled in by its driver; and the default bridge as the config
describes it.  Reads the kernel (host routes, links) through the facade; changes nothing."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from ipaddress import IPv4Interface, IPv6Network
from typing import Protocol

from netd.core import ipam
from netd.core.config import Settings
from netd.core.errors import ConflictError, InvalidError
from netd.core.linkspec import NsProbe, ObservedHost
from netd.core.model import DesiredState, IpamConfig, IPNetwork, Network
from netd.core.naming import new_id
from netd.core.request import NetworkCreate
from netd.drivers import DriverOptions, get_driver


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KernelReader(Protocol):
    """What the service reads from the kernel to validate a request (the kernel facade's read side)."""

    async def host_prefixes(self) -> list[IPNetwork]: ...
    async def link_kind_supported(self, kind: str) -> bool: ...
    async def observe(self, names: Collection[str] | None = None) -> ObservedHost: ...
    def ns_probe(self, path: str) -> NsProbe: ...
    async def ns_has_link(self, path: str, ifname: str) -> bool: ...
    def netns_foreign(self, name: str) -> str | None: ...
    def netns_path(self, name: str) -> str: ...


class NetworkBuilder:
    def __init__(self, settings: Settings, kernel: KernelReader) -> None:
        self.settings = settings
        self.kernel = kernel

    async def build(self, req: NetworkCreate, opts: DriverOptions, state: DesiredState) -> Network:
        """The new network of a create request, validated (against the other networks and the host's routes)
        and filled in by its driver.  Looks only: changes nothing."""
        if req.name in state.networks:
            raise ConflictError(f"network {req.name!r} already exists", field="name")
        net_id = new_id()
        pools: list[IpamConfig] = []
        for p in req.pools:
            if p.subnet is not None:
                pools.append(ipam.validate_pool(p.subnet, p.gateway, p.ip_range, p.aux_addresses))
        if len({c.subnet.version for c in pools}) != len(pools):
            raise InvalidError("give at most one IPv4 and one IPv6 subnet", field="subnet")
        if any(c.subnet.version == 6 for c in pools) and not req.enable_ipv6:
            raise InvalidError("an IPv6 subnet needs --ipv6", field="subnet")
        if not req.enable_ipv4 and any(c.subnet.version == 4 for c in pools):
            raise InvalidError(
                "an IPv4 --subnet conflicts with com.docker.network.enable_ipv4=false", field="subnet"
            )
        others = {n.name: [c.subnet for c in n.ipam] for n in state.networks.values()}
        for cfg in pools:
            hit = ipam.overlapping(cfg.subnet, others)
            if hit is not None:
                raise ConflictError(
                    f"network {req.name!r}: subnet {cfg.subnet} overlaps network {hit[0]!r} ({hit[1]}); "
                    "pick another --subnet",
                    field="subnet",
                )
        await self._add_automatic_pools(pools, req.enable_ipv4, req.enable_ipv6, state)
        base = Network(
            id=net_id,
            name=req.name,
            driver=req.driver,  # a key of DRIVERS (checked by the parse)
            internal=req.internal,
            enable_ipv6=req.enable_ipv6,
            ipam=pools,
            options=req.options,
            bridge="",
            mtu=req.mtu,
            labels=req.labels,
            custom_macs=False,
            created=now(),
        )
        drv = get_driver(base)
        host = await self.kernel.observe(drv.create_observes(base, opts))
        net = drv.build_network(base, opts, host, state)
        # after the options and the parent (their errors say more), before anything is stored
        kind = getattr(drv, "kernel_kind", None)  # drivers whose endpoints are a kernel link kind of their own
        if kind is not None and not await self.kernel.link_kind_supported(kind):
            raise InvalidError(
                f"network {req.name!r}: this kernel has no {kind} support (the module is missing or cannot be "
                f"loaded); load it (modprobe {kind}) or use another driver (-d macvlan)",
                field="driver",
            )
        return net

    async def _add_automatic_pools(self, pools: list[IpamConfig], v4: bool, v6: bool, state: DesiredState) -> None:
        """Pick the subnets the request did not give, clear of other networks and of the host's routes."""
        need4 = v4 and not any(c.subnet.version == 4 for c in pools)
        need6 = v6 and not any(c.subnet.version == 6 for c in pools)
        if not need4 and not need6:
            return
        used = await self.used_subnets(state)
        if need4:
            subnet = ipam.choose_subnet(((p.base, p.size) for p in self.settings.default_address_pools), used)
            pools.insert(0, ipam.validate_pool(str(subnet)))
        if need6:
            pools.append(ipam.validate_pool(str(ipam.choose_subnet_v6(self.ula_prefix(), used))))

    async def used_subnets(self, state: DesiredState) -> list[IPNetwork]:
        """Subnets a new network must not overlap: every network's and every prefix the host routes."""
        return [c.subnet for n in state.networks.values() for c in n.ipam] + await self.kernel.host_prefixes()

    def ula_prefix(self) -> IPv6Network:
        try:
            machine_id = self.settings.machine_id_file.read_text()
        except OSError as e:
            raise InvalidError(
                f"cannot read {self.settings.machine_id_file} for the host's IPv6 ULA prefix ({e.strerror}); "
                "pass an IPv6 --subnet or set machine_id_file",
                field="subnet",
            ) from e
        return ipam.ula_prefix(machine_id)

    async def default_network(self, current: Network | None, state: DesiredState) -> Network:
        """The docker0-style default network as ``[default_bridge]`` describes it now (``current``: as it is)."""
        cfg = self.settings.default_bridge
        if cfg.bip is not None:
            bip = cfg.bip
        elif current is not None and current.pool(4) is not None:
            pool = current.pool(4)
            assert pool is not None and pool.gateway is not None
            bip = IPv4Interface(f"{pool.gateway}/{pool.subnet.prefixlen}")
        else:
            used = await self.used_subnets(state)
            subnet = ipam.choose_subnet(((p.base, p.size) for p in self.settings.default_address_pools), used)
            bip = IPv4Interface(f"{ipam.first_host(subnet)}/{subnet.prefixlen}")
        pool = ipam.validate_pool(
            str(bip.network), str(bip.ip), str(cfg.fixed_cidr) if cfg.fixed_cidr else None, None
        )
        pools = [pool]
        if cfg.ipv6:
            pools.append(await self._default_pool_v6(current, state))
        net = Network(
            id=current.id if current is not None else new_id(),
            name=cfg.network_name,
            ipam=pools,
            enable_ipv6=cfg.ipv6,
            default_gateway6=cfg.default_gateway_v6,
            bridge=cfg.name,
            icc=cfg.icc,
            masquerade=cfg.ip_masq,
            mtu=cfg.mtu,
            is_default=True,
            default_gateway4=cfg.default_gateway,
            custom_macs=current.custom_macs if current is not None else False,  # its history stays
            created=current.created if current is not None else now(),
        )
        return net

    async def _default_pool_v6(self, current: Network | None, state: DesiredState) -> IpamConfig:
        cfg = self.settings.default_bridge
        if cfg.fixed_cidr_v6 is not None:
            return ipam.validate_pool(str(cfg.fixed_cidr_v6))
        if current is not None and (have := current.pool(6)) is not None:
            return have
        used = await self.used_subnets(state)
        return ipam.validate_pool(str(ipam.choose_subnet_v6(self.ula_prefix(), used)))
