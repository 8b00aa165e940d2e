"""``netd-ctl doctor``: the problems users of Docker-style networking hit most, each with a fix.

Pure: :func:`diagnose` takes :class:`Facts` (gathered by ``netd.kernel.hostfacts`` in the daemon) and the
desired state and returns findings.  No kernel, firewall or HTTP imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from netd.core.facts import Facts, ForwardChain
from netd.core.model import DesiredState

__all__ = ["Facts", "Finding", "ForwardChain", "diagnose", "report"]

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""


def diagnose(facts: Facts, state: DesiredState, ip_forward: bool) -> list[Finding]:
    checks = [
        _forwarding(facts, ip_forward),
        _foreign_drop(facts, state),
        _br_netfilter(facts, state),
        _rp_filter(facts),
        _overlaps(facts, state),
        _mtu(facts, state),
        _features(facts, state),
        _freshness(facts),
        _mount_ns(facts),
    ]
    return [f for f in checks if f is not None]


def report(findings: list[Finding]) -> dict[str, object]:
    worst = (
        "fail"
        if any(f.status == "fail" for f in findings)
        else ("warn" if any(f.status == "warn" for f in findings) else "ok")
    )
    return {"status": worst, "findings": [asdict(f) for f in findings]}


def _forwarding(facts: Facts, ip_forward: bool) -> Finding:
    value = facts.sysctls.get("net.ipv4.ip_forward")
    if value == "1":
        return Finding("ip_forward", "ok", "IPv4 forwarding is on")
    fix = "set ip-forward = true in /etc/netd/netd.toml and `systemctl reload netd`"
    if ip_forward:
        fix = (
            "netd turns it on at the next reconcile: run `netd-ctl reconcile`; if it stays off, something "
            "else (a sysctl.d file, another tool) turns it off: grep -r ip_forward /etc/sysctl.d"
        )
    return Finding("ip_forward", "fail", "net.ipv4.ip_forward is 0: endpoints cannot reach beyond the host", fix)


def _foreign_drop(facts: Facts, state: DesiredState) -> Finding:
    if not state.networks:
        return Finding("foreign_forward_drop", "ok", "no networks")
    bridges = " ".join(sorted(n.bridge for n in state.networks.values()))
    drops = [c for c in facts.forward_chains if c.policy == "drop"]
    firewalld = [t for t in facts.foreign_tables if t.endswith(" firewalld")]
    if firewalld:
        return Finding(
            "foreign_forward_drop",
            "warn",
            "firewalld is active: its zones reject forwarded traffic of interfaces not in a zone, whatever netd "
            "accepts in its own table",
            "put netd's bridges in a zone that forwards, e.g. `firewall-cmd --permanent --zone=trusted "
            f"--add-interface=<bridge>` for each of: {bridges}; then `firewall-cmd --reload`",
        )
    if drops:
        where = ", ".join(f"{c.family} {c.table} {c.chain}" for c in drops)
        return Finding(
            "foreign_forward_drop",
            "warn",
            f"forward chain(s) with policy drop outside netd's tables: {where}. A drop there wins over netd's "
            "accept (Docker sets FORWARD to DROP)",
            "accept netd's bridges in that chain, e.g. `iptables -I DOCKER-USER -i <bridge> -j ACCEPT` and "
            f"`iptables -I DOCKER-USER -o <bridge> -j ACCEPT` (or in FORWARD without Docker) for: {bridges}",
        )
    return Finding("foreign_forward_drop", "ok", "no other firewall drops forwarded traffic by policy")


def _br_netfilter(facts: Facts, state: DesiredState) -> Finding:
    call = facts.sysctls.get("net.bridge.bridge-nf-call-iptables")
    if not facts.br_netfilter or call != "1":
        return Finding("br_netfilter", "ok", "bridged traffic does not traverse iptables (br_netfilter off)")
    drops = [c for c in facts.forward_chains if c.policy == "drop"]
    if drops and state.networks:
        return Finding(
            "br_netfilter",
            "warn",
            "br_netfilter is loaded with net.bridge.bridge-nf-call-iptables=1: traffic between endpoints of the "
            "same bridge passes the forward chains, where a drop policy blocks it (no rule accepts it there)",
            "`sysctl -w net.bridge.bridge-nf-call-iptables=0` (and in /etc/sysctl.d) unless something needs it, "
            "or accept netd's bridges in the forward chain that drops",
        )
    return Finding("br_netfilter", "ok", "br_netfilter is on, and no forward chain drops by policy")


def _rp_filter(facts: Facts) -> Finding:
    strict = [
        k
        for k in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter")
        if facts.sysctls.get(k) == "1"
    ]
    if strict and len(facts.global_links) > 1:
        return Finding(
            "rp_filter",
            "warn",
            f"strict reverse-path filtering ({', '.join(strict)} = 1) on a multi-homed host "
            f"({', '.join(facts.global_links)}): replies that come back on another interface are dropped",
            "use loose mode: `sysctl -w net.ipv4.conf.all.rp_filter=2` (and in /etc/sysctl.d)",
        )
    return Finding("rp_filter", "ok", "reverse-path filtering cannot drop asymmetric replies here")


def _overlaps(facts: Facts, state: DesiredState) -> Finding:
    bridges = {n.bridge for n in state.networks.values()}
    clashes = []
    for net in sorted(state.networks.values(), key=lambda n: n.name):
        for cfg in net.ipam:
            for prefix, dev in facts.routes:
                if dev in bridges or prefix.version != cfg.subnet.version or prefix.prefixlen == 0:
                    continue
                if cfg.subnet.overlaps(prefix):
                    clashes.append(f'network "{net.name}" {cfg.subnet} overlaps route {prefix} dev {dev}')
    if clashes:
        return Finding(
            "subnet_overlap",
            "fail",
            "; ".join(clashes) + " (a VPN or another tool): traffic to those addresses goes the wrong way",
            "recreate the network with a free subnet (`netd-ctl network create --subnet ...`) or change the "
            "other route",
        )
    return Finding("subnet_overlap", "ok", "no netd subnet overlaps a host route")


def _mtu(facts: Facts, state: DesiredState) -> Finding:
    if facts.default_dev is None or facts.default_dev not in facts.link_mtu:
        return Finding("mtu", "ok", "no default route: uplink MTU not checked")
    uplink = facts.link_mtu[facts.default_dev]
    big = [f'"{n.name}" ({n.mtu or 1500})' for n in state.networks.values() if (n.mtu or 1500) > uplink]
    if big:
        return Finding(
            "mtu",
            "warn",
            f"network(s) {', '.join(big)} have an MTU larger than the uplink {facts.default_dev} ({uplink}): "
            "large packets to the outside are fragmented or black-holed",
            f"create them with `-o com.docker.network.driver.mtu={uplink}` (or mtu = {uplink} under "
            "[default_bridge])",
        )
    return Finding("mtu", "ok", f"network MTUs fit the uplink {facts.default_dev} ({uplink})")


def _features(facts: Facts, state: DesiredState) -> Finding:
    unsupported = {k: v for k, v in facts.reconcile_errors.items() if "not supported" in v.lower()}
    missing = sorted(k for k, ok in facts.modules.items() if not ok)
    if unsupported:
        return Finding(
            "kernel_features",
            "fail",
            "the kernel refused: " + "; ".join(f"{k}: {v}" for k, v in sorted(unsupported.items())),
            "install the distribution kernel's modules (linux-modules-extra / linux-image) or remove networks of "
            "that kind",
        )
    if missing and state.networks:
        return Finding(
            "kernel_features",
            "warn",
            f"kernel features not loaded: {', '.join(missing)} (netd's networks need them)",
            f"`modprobe {' '.join(missing)}`; if that fails, the kernel lacks them",
        )
    return Finding("kernel_features", "ok", "the kernel has what the configured networks need")


def _freshness(facts: Facts) -> Finding:
    limit = 3 * facts.reconcile_interval
    if facts.last_success_age is None:
        return Finding(
            "last_reconcile",
            "fail",
            "no full reconcile has finished without errors since netd started",
            "see `netd-ctl check` and `journalctl -u netd` for the objects that fail",
        )
    if facts.last_success_age > limit:
        return Finding(
            "last_reconcile",
            "fail",
            f"last successful full reconcile was {facts.last_success_age:.0f} s ago (limit {limit:.0f} s)",
            "see `netd-ctl check` and `journalctl -u netd` for the objects that fail",
        )
    return Finding("last_reconcile", "ok", f"last successful full reconcile {facts.last_success_age:.0f} s ago")


def _mount_ns(facts: Facts) -> Finding | None:
    ok, why = facts.mount_ns
    if not why:
        return None
    if ok or "cannot open" not in why:
        return Finding("netns_visibility", "ok", why)
    return Finding(
        "netns_visibility",
        "warn",
        why,
        "under systemd netd needs CAP_SYS_PTRACE to open /proc/1/ns/mnt (see systemd/netd.service); without it "
        "`ip netns list` on the host may not see netd's namespaces",
    )
