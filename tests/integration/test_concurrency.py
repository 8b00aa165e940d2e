"""32 clients at once: each connects and disconnects its namespace to one network, some asking for the same
address.  Every answer is 2xx or a clean 4xx (a JSON error with a code and a message), no address is held
twice, and at the end the state, ``check`` and the kernel agree.  The test prints the number of requests and
violations."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from netdtest import Host, in_ns, running_host

CLIENTS = 32
ROUNDS = 3
SUBNET = "172.28.40.0/24"
CONTESTED = [f"172.28.40.{200 + i}" for i in range(4)]  # asked for by several clients at once: one wins each


def client(
    host: Host, i: int, start: threading.Barrier, out: dict[int, Any], log: list[tuple[int, str, int, Any]]
) -> None:
    ns = f"cc{i}"
    start.wait()
    last: Any = None
    for rnd in range(ROUNDS):
        cfg: dict[str, Any] = {}
        if (i + rnd) % 3 == 0:
            cfg = {"IPAMConfig": {"IPv4Address": CONTESTED[(i + rnd) % len(CONTESTED)]}}
        try:
            status, body = host.api.request(
                "POST", "/v1/networks/cc/connect", {"Netns": ns, "EndpointConfig": cfg}
            )
        except (OSError, ValueError) as e:
            status, body = -1, repr(e)
        log.append((i, "connect", status, body))
        last = body if status == 201 else None
        if rnd == ROUNDS - 1:
            break
        if status == 201:
            try:
                status, body = host.api.request("POST", "/v1/networks/cc/disconnect", {"Netns": ns})
            except (OSError, ValueError) as e:
                status, body = -1, repr(e)
            log.append((i, "disconnect", status, body))
            if status != 204:
                last = None
    out[i] = last


def test_32_clients_connect_and_disconnect_at_once(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.api.ok("POST", "/v1/networks", {"Name": "cc", "IPAM": {"Config": [{"Subnet": SUBNET}]}})
        for i in range(CLIENTS):
            host.api.ok("POST", "/v1/netns", {"Name": f"cc{i}"})
        start = threading.Barrier(CLIENTS)
        final: dict[int, Any] = {}
        log: list[tuple[int, str, int, Any]] = []
        threads = [threading.Thread(target=client, args=(host, i, start, final, log)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        violations: list[str] = [f"client {t.name} did not finish" for t in threads if t.is_alive()]
        for i, what, status, body in log:
            clean_4xx = (
                400 <= status < 500
                and isinstance(body, dict)
                and body.get("error", {}).get("code")
                and body["error"].get("message")
            )
            if not (200 <= status < 300 or clean_4xx):
                violations.append(f"client {i} {what}: {status} {body}")
        conflicts = sum(1 for _, _, status, _ in log if status == 409)

        containers = host.api.ok("GET", "/v1/networks/cc")["Containers"].values()
        held = {c["Name"]: c["IPv4Address"] for c in containers}
        addrs = list(held.values())
        if len(addrs) != len(set(addrs)):
            violations.append(f"one address on two endpoints: {sorted(addrs)}")
        for i, ep in final.items():  # the last answered connect is what the network holds
            got = held.get(f"cc{i}")
            want = ep["IPv4Address"] if ep is not None else None
            if got != want:
                violations.append(f"cc{i}: the network holds {got}, the last answer said {want}")

        host.api.ok("POST", "/v1/reconcile")
        check = host.api.ok("GET", "/v1/check")
        if not check["in_sync"]:
            violations.append(f"not in sync after the run: {check['differences'][:3]}")
        state = host.stored_state()
        links = json.loads(in_ns(host.path, "ip", "-j", "-d", "link", "show", "type", "veth").stdout)
        veths = {link["ifname"] for link in links if link.get("ifalias", "").startswith("netd:")}
        if veths != {ep["host_ifname"] for ep in state["endpoints"].values()}:
            violations.append(f"netd veths {sorted(veths)} != the state's endpoints")
        for name, addr in held.items():
            got = json.loads(in_ns(host.ns(name), "ip", "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
            if [f"{a['local']}/{a['prefixlen']}" for a in got if a["family"] == "inet"] != [addr]:
                violations.append(f"{name}: eth0 has {got}, the state says {addr}")
        for i in range(CLIENTS):
            if f"cc{i}" not in held:
                leftovers = in_ns(host.ns(f"cc{i}"), "ip", "-o", "link", "show", "type", "veth").stdout
                if leftovers.strip():
                    violations.append(f"cc{i} is not connected but has a veth: {leftovers.strip()}")

        print(
            f"\nconcurrency: {CLIENTS} clients, {len(log)} requests ({conflicts} clean 409s for contested "
            f"addresses), {len(held)} endpoints at the end, {len(violations)} violations"
        )
        for v in violations[:20]:
            print("  ", v)
        assert not violations, "\n".join(violations[:20])
        assert len(held) >= CLIENTS - len(CONTESTED) * ROUNDS  # most clients end connected
