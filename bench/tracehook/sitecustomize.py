"""Loaded by the daemon when bench/connect_timers.py puts this directory on its PYTHONPATH: wraps the functions
of a connect's path with wall-clock timers and writes their medians to $NETD_TRACE when netd exits.  Benchmark
only; netd itself has no such hook."""

from __future__ import annotations

import atexit
import collections
import functools
import inspect
import os
import sys
import time
from typing import Any

STATS: dict[str, list[float]] = collections.defaultdict(list)

# (module, attribute holding the function or class, method or None, label)
TARGETS = [
    ("netd.engine.service", "Service", "connect", "API: Service.connect (all of it)"),
    ("netd.engine.service", "Service", "_build_endpoint", "validate + IPAM (_build_endpoint)"),
    ("netd.engine.endpointbuild", "free_ifname", None, "  of which: interface name free in the netns"),
    ("netd.engine.nsident", "NamespaceIndex", "endpoints_in", "  of which: the namespace's endpoints"),
    ("netd.engine.service", "assign_default_routes", None, "default route carriers (connect)"),
    ("netd.engine.service", "Service", "_commit", "commit (save + apply + hooks)"),
    ("netd.engine.service", "Service", "_adopt", "  adopt the new state (save + address book)"),
    ("netd.engine.state", "StateStore", "save", "    journal append + fsync"),
    ("netd.engine.state", "diff", None, "      of which: diff of the state"),
    ("netd.core.epindex", "EndpointIndex", "derive", "    endpoint index derived (issue 14)"),
    ("netd.engine.commit", "scope_links", None, "  scope: the links of old and new"),
    ("netd.engine.reconciler", "Reconciler", "apply", "  scoped reconcile"),
    ("netd.engine.reconciler", "Reconciler", "_reconcile", "    inside the reconciler lock"),
    ("netd.engine.reconciler", "Reconciler", "_observe", "    observe"),
    ("netd.engine.reconciler", "plan", None, "    plan (pure)"),
    ("netd.engine.reconciler", "build_ruleset", None, "    firewall ruleset build"),
    ("netd.engine.reconciler", "Reconciler", "_run_unit", "    actions (each)"),
    ("netd.kernel.facade", "Kernel", "ensure_veth", "    EnsureVeth"),
    ("netd.kernel.facade", "Kernel", "release_netns_sockets", "    release the namespace sockets"),
    ("netd.kernel.link", "_create_veth", None, "      create path (_create_veth)"),
    ("netd.kernel.link", "create_veth", None, "        worker job: create, read back, both sides, announce"),
    ("netd.kernel.vethup", "_create", None, "          of which inside the worker"),
    ("netd.kernel.vethup", "_finish", None, "          both sides configured + announce (_finish)"),
    ("netd.engine.service", "Service", "notify_change", "  DNS / resolv.conf / hosts hooks"),
    ("netd.dns.server", "DnsServer", "sync", "    DNS listeners"),
    ("netd.dns.nsresolver", "NsResolvers", "sync", "    namespace resolvers (127.0.0.11)"),
    ("netd.dns.resolvconf", "ResolvConfWriter", "sync", "    resolv.conf files"),
    ("netd.dns.hostsfile", "HostsWriter", "sync", "    hosts files (--link)"),
    # a published port's own costs (connect_timers.py --ports)
    ("netd.engine.endpointbuild", "plan_published", None, "ports: plan_published (clash checks)"),
    ("netd.firewall.nftables", "NftablesBackend", "apply", "ports: firewall apply (nftables)"),
    ("netd.firewall.nftables", "NftablesBackend", "_apply_sync", "ports:   of which in the nft thread"),
    ("netd.firewall.nftables", "render_nft_delta", None, "ports:   render the delta"),
    ("netd.firewall.nftables", "NftablesBackend", "_cmd", "ports:   libnftables (json_cmd)"),
    ("netd.firewall.nftables", "NftablesBackend", "_generation", "ports:   read the nf_tables generation"),
    ("netd.kernel.facade", "Kernel", "get_sysctl", "ports: sysctl reads"),
    ("netd.kernel.facade", "Kernel", "set_sysctl", "ports: sysctl writes"),
    ("netd.kernel.facade", "Kernel", "flush_udp_conntrack", "ports: conntrack flush"),
]


FIRST = TARGETS[0][3]  # the timers start at the first connect (the netns creates before it are not counted)


def _wrap(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:
        return
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*a: Any, **k: Any) -> Any:
            if label == FIRST and not STATS.get(FIRST):
                STATS.clear()
            t0 = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                STATS[label].append(time.perf_counter() - t0)

        setattr(owner, name, timed_async)
    else:

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                STATS[label].append(time.perf_counter() - t0)

        setattr(owner, name, timed)


def _dump() -> None:
    with open(os.environ["NETD_TRACE"], "w", encoding="utf-8") as f:
        for label, _mod, _attr, _meth in ((t[3], *t[:3]) for t in TARGETS):
            v = sorted(STATS.get(label, []))
            if v:
                raw = STATS[label]
                head = sorted(raw[:10])[len(raw[:10]) // 2] * 1000
                tail = sorted(raw[-10:])[len(raw[-10:]) // 2] * 1000
                f.write(
                    f"{label:55s} n={len(v):5d} median={v[len(v) // 2] * 1000:8.3f} ms"
                    f"  first10={head:8.3f} last10={tail:8.3f}\n"
                )


if os.environ.get("NETD_TRACE") and sys.argv and sys.argv[0].endswith("netd"):
    import importlib

    for mod_name, attr, meth, label in TARGETS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # a module an older revision does not have (bench/connect_timers.py --rev)
            continue
        if meth is None:
            _wrap(mod, attr, label)
        else:
            _wrap(getattr(mod, attr), meth, label)
    atexit.register(_dump)
