"""Issue 12: what a Docker user trips over (items 5-8, 11), on a real daemon and kernel (each failed on main)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from netdtest import Host, in_ns, reach, running_host, sh


def _inspect(host: Host, name: str) -> dict[str, Any]:
    data: dict[str, Any] = host.api.ok("GET", f"/v1/networks/{name}")
    return data


def _connect(host: Host, net: str, ns: str, **cfg: Any) -> dict[str, Any]:
    host.api.ok("POST", "/v1/netns", {"Name": ns})
    data: dict[str, Any] = host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns, **cfg})
    return data


def test_default_bridge_takes_docker0s_subnet_and_leaves_the_macvlan_example_free(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        assert _inspect(host, "bridge")["IPAM"]["Config"][0]["Subnet"] == "172.17.0.0/16"
        auto = host.api.ok("POST", "/v1/networks", {"Name": "auto"})
        assert _inspect(host, auto["Name"])["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/16"
        # the Docker guide's macvlan example, on the host's uplink
        host.ctl("network", "create", "-d", "macvlan", "--subnet=172.16.86.0/24", "-o", "parent=uplink", "pub_net")


def test_default_bridge_leaves_a_real_docker0s_subnet_alone(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        in_ns(host.path, "ip", "link", "add", "docker0", "type", "bridge")
        in_ns(host.path, "ip", "addr", "add", "172.17.0.1/16", "dev", "docker0")
        host.start()
        assert _inspect(host, "bridge")["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/16"


def test_daemon_json_runs_the_default_bridge(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        host.write_config()
        daemon_json = tmp_path / "daemon.json"
        daemon_json.write_text(
            json.dumps(
                {
                    "bip": "10.66.0.1/24",
                    "fixed-cidr": "10.66.0.130/25",  # Docker's form: host bits set, masked to 10.66.0.128/25
                    "mtu": 1400,
                    "dns": ["192.0.2.53"],
                    "storage-driver": "overlay2",
                }
            )
        )
        # the paths a test host needs come from the environment; everything else from daemon.json
        env = {
            "NETD_STATE_DIR": str(host.state_dir),
            "NETD_RUN_DIR": str(host.run_dir),
            "NETD_NETNS_DIR": str(host.netns_dir),
            "NETD_ETC_NETNS_DIR": str(tmp_path / "etc-netns"),
            "NETD_LOG_FORMAT": "json",
        }
        from netdtest import NETD

        host.spawn(["nsenter", f"--net={host.path}", NETD, "--config", str(daemon_json)], env)
        host.wait_ready()
        cfg = _inspect(host, "bridge")["IPAM"]["Config"][0]
        assert (cfg["Subnet"], cfg["Gateway"], cfg["IPRange"]) == ("10.66.0.0/24", "10.66.0.1", "10.66.0.128/25")
        ep = _connect(host, "bridge", "old")
        ip4 = ep["IPv4Address"].split("/")[0]
        assert ip4.startswith("10.66.0.") and int(ip4.split(".")[3]) >= 128, ip4
        assert reach(host.ns("old"), "10.66.0.1")
        link = json.loads(in_ns(host.ns("old"), "ip", "-j", "link", "show", "eth0").stdout)[0]
        assert link["mtu"] == 1400
        resolv = (tmp_path / "etc-netns" / "old" / "resolv.conf").read_text()
        assert "nameserver 192.0.2.53" in resolv.splitlines()
        assert "storage-driver" in host.log_text()  # named once as ignored


def test_alias_on_the_default_bridge_is_refused(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.api.ok("POST", "/v1/netns", {"Name": "a"})
        before = host.state_bytes()
        status, err = host.api.request(
            "POST", "/v1/networks/bridge/connect", {"Netns": "a", "EndpointConfig": {"Aliases": ["www"]}}
        )
        assert status == 400 and err["error"]["field"] == "alias", err
        assert "no name service" in err["error"]["message"]
        assert host.state_bytes() == before


def test_macvlan_mtu_above_the_parents_is_refused_naming_both(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        r = host.ctl(
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=10.77.0.0/24",
            "-o",
            "parent=uplink",
            "-o",
            "com.docker.network.driver.mtu=9000",
            "jumbo",
            check=False,
        )
        assert r.returncode != 0
        assert "mtu 9000 is above the parent uplink's mtu 1500" in r.stderr + r.stdout
        assert host.api.request("GET", "/v1/networks/jumbo")[0] == 404


def test_reload_adds_ipv6_live_and_reports_what_waits(tmp_path: Path) -> None:
    with running_host(tmp_path, config='[default_bridge]\nbip = "10.67.0.1/24"\n') as host:
        _connect(host, "bridge", "a")
        _connect(host, "bridge", "b")
        host.extra_config = '[default_bridge]\nbip = "10.67.0.1/24"\nipv6 = true\nfixed-cidr-v6 = "fd00:67::/64"\n'
        host.write_config()
        out = host.ctl("reload")
        assert "everything applied" in out.stdout, out.stdout
        eps = {e["Name"]: e for e in _inspect(host, "bridge")["Containers"].values()}
        b6 = eps["b"]["IPv6Address"].split("/")[0]
        assert b6.startswith("fd00:67::")
        assert reach(host.ns("a"), b6)  # real traffic over the address added live
        assert host.api.ok("GET", "/v1/status")["degraded"] == []
        # a new bip needs the endpoints gone: said in the answer and in status, the old subnet kept
        host.extra_config = '[default_bridge]\nbip = "10.68.0.1/24"\nipv6 = true\nfixed-cidr-v6 = "fd00:67::/64"\n'
        host.write_config()
        r = host.ctl("reload", check=False)
        assert r.returncode == 1 and "pending" in r.stdout and "disconnect them" in r.stdout, r.stdout
        st = host.api.ok("GET", "/v1/status")
        assert any("10.68.0.0/24" in d for d in st["degraded"]), st["degraded"]
        assert "DEGRADED" in host.ctl("status").stdout
        assert _inspect(host, "bridge")["IPAM"]["Config"][0]["Subnet"] == "10.67.0.0/24"
        assert reach(host.ns("a"), "10.67.0.1")


def test_status_names_the_journal_until_the_snapshot_exists(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.api.ok("POST", "/v1/netns", {"Name": "x"})
        assert not (host.state_dir / "state.json").exists()
        st = host.api.ok("GET", "/v1/status")["state_file"]
        assert st.startswith(str(host.state_dir / "state.json.journal")), st


def _kernel_has_ipvlan() -> bool:
    probe = f"ndt-p-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", probe)
    try:
        made = in_ns(f"/run/netns/{probe}", "ip", "link", "add", "pv0", "type", "ipvlan", check=False)
        return "not supported" not in made.stderr.lower() and "unknown device type" not in made.stderr.lower()
    finally:
        sh("ip", "netns", "del", probe, check=False)


def test_ipvlan_on_a_kernel_without_it_is_refused_at_create(tmp_path: Path) -> None:
    if _kernel_has_ipvlan():
        pytest.skip("this kernel has ipvlan (the VM tier): the refusal cannot be seen here")
    with running_host(tmp_path) as host:
        before = host.state_bytes()
        links = in_ns(host.path, "ip", "-o", "link").stdout
        status, err = host.api.request(
            "POST",
            "/v1/networks",
            {"Name": "ipnet", "Driver": "ipvlan", "Options": {"parent": "uplink"}},
        )
        assert status == 400 and err["error"]["field"] == "driver", err
        assert "no ipvlan support" in err["error"]["message"] and "modprobe ipvlan" in err["error"]["message"]
        assert host.state_bytes() == before
        assert in_ns(host.path, "ip", "-o", "link").stdout == links  # no probe link left behind
        # macvlan, which this kernel has, still passes the same probe
        host.ctl("network", "create", "-d", "macvlan", "--subnet=10.78.0.0/24", "-o", "parent=uplink", "mv")


def test_host_none_labels_filters_id_prefixes_and_prune(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        ls = host.ctl("network", "ls").stdout.splitlines()
        rows = {line.split()[1]: line.split()[2] for line in ls[1:]}
        assert rows == {"bridge": "bridge", "host": "host", "none": "null"}, ls
        assert host.api.ok("GET", "/v1/networks/none")["Driver"] == "null"
        host.api.ok("POST", "/v1/netns", {"Name": "c1"})
        before = host.state_bytes()
        r = host.ctl("network", "connect", "host", "c1", check=False)
        assert r.returncode != 0
        assert "cannot be disconnected from host network or connected to host network" in r.stderr
        r = host.ctl("network", "connect", "none", "c1", check=False)
        assert r.returncode != 0 and "private (none) mode" in r.stderr
        assert "pre-defined network" in host.ctl("network", "rm", "host", check=False).stderr
        assert host.api.request("POST", "/v1/networks", {"Name": "none"})[0] == 409
        assert host.state_bytes() == before
        # labels, filters
        host.ctl("network", "create", "--label", "env=prod", "--label", "team=a", "prod-net")
        host.ctl("network", "create", "--label", "env=dev", "dev-net")
        host.ctl("network", "create", "-d", "macvlan", "--subnet=10.79.0.0/24", "-o", "parent=uplink", "lan")
        assert host.api.ok("GET", "/v1/networks/prod-net")["Labels"] == {"env": "prod", "team": "a"}

        def names(*filters: str) -> list[str]:
            args = [a for f in filters for a in ("--filter", f)]
            out = host.ctl("network", "ls", "--format", "json", *args).stdout
            return sorted(n["Name"] for n in json.loads(out))

        assert names("label=env=prod") == ["prod-net"]
        assert names("label=env") == ["dev-net", "prod-net"]
        assert names("driver=macvlan") == ["lan"]
        assert names("driver=bridge", "name=net") == ["dev-net", "prod-net"]
        assert names("type=custom") == ["dev-net", "lan", "prod-net"]
        # a short id prefix names the network in every command, when it is unique
        ids = {n["Name"]: n["Id"] for n in host.api.ok("GET", "/v1/networks")}
        others = [i for n, i in ids.items() if n != "prod-net"]
        k = next(k for k in range(1, 64) if not any(i.startswith(ids["prod-net"][:k]) for i in others))
        short = ids["prod-net"][:k]
        assert host.api.ok("GET", f"/v1/networks/{short}")["Name"] == "prod-net"
        host.ctl("network", "connect", short, "c1")
        assert reach(host.ns("c1"), host.api.ok("GET", "/v1/networks/prod-net")["IPAM"]["Config"][0]["Gateway"])
        host.ctl("network", "disconnect", short, "c1")
        host.ctl("network", "connect", short, "c1")
        # prune removes what has no endpoints, never the default bridge nor a used one
        out = host.ctl("network", "prune", "-f").stdout
        assert out.split() == ["Deleted", "Networks:", "dev-net", "lan"], out
        assert names("type=custom") == ["prod-net"]
        assert "bridge" in names()
        assert "br-" + ids["dev-net"][:12] not in in_ns(host.path, "ip", "-o", "link").stdout


def test_expose_and_publish_all_answer_from_outside(tmp_path: Path) -> None:
    from test_ports import echo_server, reaches

    with running_host(tmp_path) as host:
        host.ctl("network", "create", "--subnet", "172.30.90.0/24", "app")
        host.api.ok("POST", "/v1/netns", {"Name": "web"})
        host.api.ok("POST", "/v1/netns", {"Name": "doc"})
        # --expose alone is documentation, as in Docker: nothing published
        host.ctl("network", "connect", "--expose", "81", "app", "doc")
        assert host.ctl("port", "doc").stdout.strip() == ""
        host.ctl(
            "network", "connect", "-P", "--expose", "80", "--expose", "5353/udp", "-p", "8080:80", "app", "web"
        )
        lines = sorted(host.ctl("port", "web").stdout.splitlines())
        # 80/tcp was published explicitly (-p wins); 5353/udp got a free port of the range
        assert lines[0].startswith("5353/udp -> 0.0.0.0:") and "80/tcp -> 0.0.0.0:8080" in lines, lines
        udp_port = int(lines[0].rsplit(":", 1)[1])
        assert 49153 <= udp_port <= 60999
        with echo_server(host.ns("web"), "web", 80, 5353):
            assert reaches(host.outside_path, "tcp", host.uplink_ip, 8080)
            assert reaches(host.outside_path, "udp", host.uplink_ip, udp_port)
        r = host.ctl("network", "connect", "-P", "app", "doc2", check=False)
        assert r.returncode != 0
        status, err = host.api.request(
            "POST",
            "/v1/networks/app/connect",
            {"Netns": "doc", "PublishAllPorts": True, "ExposedPorts": {"x/tcp": {}}},
        )
        assert status == 400 and err["error"]["field"] == "expose", err


def test_netns_network_none_keeps_only_lo(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.ctl("netns", "create", "--network", "none", "isolated")
        links = json.loads(in_ns(host.ns("isolated"), "ip", "-j", "link").stdout)
        assert [lk["ifname"] for lk in links] == ["lo"]
        before = host.state_bytes()
        r = host.ctl("network", "connect", "bridge", "isolated", check=False)
        assert r.returncode != 0 and "private (none) mode" in r.stderr and "--network none" in r.stderr
        assert host.state_bytes() == before
        assert host.api.ok("GET", "/v1/netns/isolated")["Network"] == "none"
        host.stop()
        host.start()  # the mode is kept across a restart
        r = host.ctl("network", "connect", "bridge", "isolated", check=False)
        assert r.returncode != 0 and "private (none) mode" in r.stderr


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_link_on_the_default_bridge_with_icc_off(tmp_path: Path, backend: str) -> None:
    cfg = f'[firewall]\nbackend = "{backend}"\n[default_bridge]\nbip = "10.69.0.1/24"\nicc = false\n'
    with running_host(tmp_path, config=cfg) as host:
        db = _connect(host, "bridge", "db")["IPv4Address"].split("/")[0]
        other = _connect(host, "bridge", "other")["IPv4Address"].split("/")[0]
        host.api.ok("POST", "/v1/netns", {"Name": "web"})
        host.ctl("network", "connect", "--link", "db:database", "bridge", "web")
        web = host.api.ok("GET", "/v1/netns/web")["Endpoints"][0]["IPv4Address"].split("/")[0]
        etc = tmp_path / "etc-netns"
        assert f"{db}\tdatabase db" in (etc / "web" / "hosts").read_text()
        assert f"{web}\tweb" in (etc / "db" / "hosts").read_text()
        # icc=false: the linked pair talks both ways, nobody else does
        assert reach(host.ns("web"), db) and reach(host.ns("db"), web)
        mentions_db = re.compile(rf"(?<![\d.]){re.escape(db)}(?![\d])")
        assert mentions_db.search(host.kernel_snapshot())  # the pair's accept rules, read back from the kernel
        assert not reach(host.ns("other"), db, deadline=2) and not reach(host.ns("web"), other, deadline=2)
        # a link to a namespace not on the bridge, or on a user-defined network, is refused
        host.api.ok("POST", "/v1/netns", {"Name": "x"})
        r = host.ctl("network", "connect", "--link", "nope:n", "bridge", "x", check=False)
        assert r.returncode != 0 and "not connected to network 'bridge'" in r.stderr
        host.ctl("network", "create", "app")
        r = host.ctl("network", "connect", "--link", "db", "app", "x", check=False)
        assert r.returncode != 0 and "--link is for the default bridge" in r.stderr
        # the link goes with the linked namespace: files gone, traffic dropped again
        host.ctl("network", "disconnect", "bridge", "db")
        assert not (etc / "web" / "hosts").exists() and not (etc / "db" / "hosts").exists()
        assert not mentions_db.search(host.kernel_snapshot())  # its accept rules are gone from the kernel


def test_reload_applies_mtu_and_icc_live(tmp_path: Path) -> None:
    with running_host(tmp_path, config='[default_bridge]\nbip = "10.70.0.1/24"\n') as host:
        a = _connect(host, "bridge", "a")
        b = _connect(host, "bridge", "b")["IPv4Address"].split("/")[0]
        assert reach(host.ns("a"), b)
        host.extra_config = '[default_bridge]\nbip = "10.70.0.1/24"\nmtu = 1400\nicc = false\n'
        host.write_config()
        assert "everything applied" in host.ctl("reload").stdout
        peer = json.loads(in_ns(host.ns("a"), "ip", "-j", "link", "show", "eth0").stdout)[0]
        side = json.loads(in_ns(host.path, "ip", "-j", "link", "show", a["HostInterface"]).stdout)[0]
        assert (peer["mtu"], side["mtu"]) == (1400, 1400)
        assert not reach(host.ns("a"), b, deadline=2)  # icc off, at once
        assert host.api.ok("GET", "/v1/status")["degraded"] == []


def test_netns_network_host_names_the_hosts_namespace(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.ctl("netns", "create", "--network", "host", "hostnet")
        # the same namespace as the host's: its uplink and address are there, read back through the name
        addrs = in_ns(host.ns("hostnet"), "ip", "-o", "addr", "show", "dev", "uplink").stdout
        assert host.uplink_ip in addrs
        assert Path(host.ns("hostnet")).stat().st_ino == Path(host.path).stat().st_ino
        before = host.state_bytes()
        r = host.ctl("network", "connect", "bridge", "hostnet", check=False)
        assert r.returncode != 0 and "connected to host network" in r.stderr
        assert host.state_bytes() == before
        host.ctl("netns", "rm", "hostnet")  # only the name goes: the host's namespace and uplink stay
        assert not Path(host.ns("hostnet")).exists()
        assert host.uplink_ip in in_ns(host.path, "ip", "-o", "addr", "show", "dev", "uplink").stdout
