"""``netd`` as a CNI plugin (CNI spec 1.1): ADD, DEL, CHECK, VERSION, STATUS, GC through the daemon's API.

A runtime runs the plugin with ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME`` (and
``CNI_ARGS``, ``CNI_PATH``) in the environment and the network configuration on stdin::

    {"cniVersion": "1.0.0", "name": "app", "type": "netd", "network": "app",
     "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true}}

``network`` names the netd network (default: ``name``); ``socket`` the daemon's socket (else ``NETD_SOCKET``,
else /run/netd/netd.sock).  The endpoint keeps the container id, so DEL and GC find it by that id and
``netd-ctl network inspect`` shows it.  Standard library only: a call costs one interpreter start.
"""

from __future__ import annotations

import json
import os
import sys

from . import client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SOCKET = "/run/netd/netd.sock"
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"

# the spec's well-known error codes
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
# plugin-specific (100+)
NETD_REFUSED = 100
CHECK_FAILED = 101


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "", http_status: int = 0) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.http_status = http_status  # netd's answer, when it answered


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


class Plugin:
    def __init__(self, env: dict[str, str], stdin: str) -> None:
        self.env = env
        self.command = env.get("CNI_COMMAND", "")
        self.conf: dict[str, Any] = {}
        self.version = LATEST
        if self.command != "VERSION" or stdin.strip():
            self._load(stdin)
        self.socket = str(self.conf.get("socket") or env.get("NETD_SOCKET") or DEFAULT_SOCKET)

    def _load(self, stdin: str) -> None:
        try:
            conf = json.loads(stdin) if stdin.strip() else None
        except ValueError as e:
            raise CniError(DECODE_FAILURE, "network configuration on stdin is not JSON", str(e)) from None
        if not isinstance(conf, dict):
            raise CniError(DECODE_FAILURE, "network configuration on stdin must be a JSON object")
        self.conf = conf
        version = conf.get("cniVersion")
        if self.command == "VERSION":
            return
        if not isinstance(version, str) or version not in SUPPORTED:
            raise CniError(
                INCOMPATIBLE_VERSION,
                f"cniVersion {version!r} is not supported",
                f"netd supports {', '.join(SUPPORTED)}; set cniVersion in the network configuration list",
            )
        self.version = version
        for key in ("socket", "network"):
            if key in conf and not isinstance(conf[key], str):
                raise CniError(INVALID_CONFIG, f"{key} must be a string", f"{key}={conf[key]!r}")

    # -- helpers -----------------------------------------------------------------------------------------------

    @property
    def network(self) -> str:
        net = self.conf.get("network") or self.conf.get("name")
        if not isinstance(net, str) or not net:
            raise CniError(INVALID_CONFIG, "no netd network named", 'set "network" (or "name") in the config')
        return net

    def need(self, *names: str) -> list[str]:
        values = []
        for name in names:
            value = self.env.get(name, "")
            if not value:
                why = f"the runtime must set {name} for {self.command}"
                raise CniError(INVALID_ENV, f"{name} is not set", why)
            values.append(value)
        return values

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return client.call(self.socket, method, path, body)
        except client.ConnectError as e:
            raise CniError(TRY_AGAIN_LATER, f"netd is not reachable at {self.socket}", str(e)) from None
        except client.ProtocolError as e:
            raise CniError(IO_FAILURE, "netd did not answer properly", str(e)) from None
        except client.ApiError as e:
            if e.status >= 500:
                raise CniError(TRY_AGAIN_LATER, "netd could not do it now", e.message) from None
            if e.status == 400:
                raise CniError(INVALID_CONFIG, "netd refused the request", e.message) from None
            raise CniError(NETD_REFUSED, "netd refused the request", e.message, e.status) from None

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """The network's endpoints (by id), or an empty map when the network is gone."""
        try:
            net = self.call("GET", "/v1/networks/" + client.quote(self.network))
        except CniError as e:
            if e.http_status == 404:
                return {}
            raise
        containers = net.get("Containers") if isinstance(net, dict) else None
        return containers if isinstance(containers, dict) else {}

    # -- commands ----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any] | None:
        handler = {
            "ADD": self.add,
            "DEL": self.delete,
            "CHECK": self.check,
            "VERSION": self.report_version,
            "STATUS": self.status,
            "GC": self.gc,
        }.get(self.command)
        if handler is None:
            raise CniError(INVALID_ENV, f"CNI_COMMAND {self.command!r} is not known", "use ADD, DEL, CHECK, ...")
        return handler()

    def report_version(self) -> dict[str, Any]:
        return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED)}

    def status(self) -> None:
        """Ready when netd answers and has the network an ADD would attach to."""
        try:
            self.call("GET", "/v1/networks/" + client.quote(self.network))
        except CniError as e:
            msg = f"netd has no network {self.network!r}" if e.http_status == 404 else "netd is not available"
            raise CniError(NOT_AVAILABLE, msg, e.details or e.msg) from None
        return None

    def add(self) -> dict[str, Any]:
        container_id, netns, ifname = self.need("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        body = connect_body(self.conf.get("runtimeConfig"), self.env.get("CNI_ARGS", ""), self.network)
        body.update({"NetnsPath": netns, "Interface": ifname, "ContainerID": container_id})
        try:
            ep = self.call("POST", f"/v1/networks/{client.quote(self.network)}/connect", body)
        except CniError as e:
            if e.http_status == 404:  # no such netd network (or namespace): the configuration names it
                msg = f"netd cannot attach {netns} to network {self.network!r}"  # details: which is missing
                raise CniError(INVALID_CONFIG, msg, e.details) from None
            raise
        return build_result(self.version, ep, netns, self.conf.get("prevResult"))

    def delete(self) -> None:
        (container_id,) = self.need("CNI_CONTAINERID")
        ifname = self.env.get("CNI_IFNAME", "")
        body = {"ContainerID": container_id, **({"Interface": ifname} if ifname else {})}
        try:
            self.call("POST", f"/v1/networks/{client.quote(self.network)}/disconnect", body)
        except CniError as e:
            if e.http_status != 404:  # not a "no such network / endpoint"
                raise
        return None  # gone already (a second DEL, a restart that pruned it, an unknown container): success

    def check(self) -> None:
        container_id, netns, ifname = self.need("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        if _version_tuple(self.version) < (0, 4, 0):
            raise CniError(INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
        ep = next(
            (
                e
                for e in self.endpoints().values()
                if e.get("ContainerID") == container_id and e.get("Interface") == ifname
            ),
            None,
        )
        if ep is None:
            raise CniError(UNKNOWN_CONTAINER, f"container {container_id[:12]} has no {ifname} on {self.network}")
        from .cni_check import check_namespace

        problems = check_namespace(netns, ifname, ep, self.conf.get("prevResult"))
        if problems:
            raise CniError(CHECK_FAILED, f"{ifname} in {netns} is not as netd made it", "; ".join(problems))
        return None

    def gc(self) -> None:
        valid = self.conf.get("cni.dev/valid-attachments", self.conf.get("cni.dev/attachments", []))
        if not isinstance(valid, list):
            raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
        keep = {
            (a.get("containerID"), a.get("ifname")) for a in valid if isinstance(a, dict) and a.get("containerID")
        }
        failed = []
        for ep in self.endpoints().values():
            cid, ifname = ep.get("ContainerID"), ep.get("Interface")
            if not cid or (cid, ifname) in keep:
                continue  # not made through CNI, or still valid
            try:
                body = {"ContainerID": cid, "Interface": ifname}
                self.call("POST", f"/v1/networks/{client.quote(self.network)}/disconnect", body)
            except CniError as e:
                if e.code == TRY_AGAIN_LATER:
                    raise
                failed.append(f"{cid[:12]}/{ifname}: {e.details or e.msg}")
        if failed:
            raise CniError(NETD_REFUSED, "GC could not remove every stale attachment", "; ".join(failed))
        return None


def connect_body(runtime: Any, cni_args: str, network: str) -> dict[str, Any]:
    """The netd connect body from ``runtimeConfig`` (portMappings, ips, mac, aliases) and ``CNI_ARGS``."""
    rt = runtime if isinstance(runtime, dict) else {}
    args = dict(kv.split("=", 1) for kv in cni_args.split(";") if "=" in kv)
    ipam: dict[str, str] = {}
    ips = rt.get("ips") or [x for x in args.get("IP", "").split(",") if x]
    if not isinstance(ips, list):
        raise CniError(INVALID_CONFIG, "runtimeConfig.ips must be a list of addresses")
    for ip in ips:
        addr = str(ip).split("/")[0]
        ipam["IPv6Address" if ":" in addr else "IPv4Address"] = addr
    cfg: dict[str, Any] = {"IPAMConfig": ipam} if ipam else {}
    mac = rt.get("mac") or args.get("MAC")
    if mac:
        cfg["MacAddress"] = str(mac)
    aliases = rt.get("aliases") or []
    if isinstance(aliases, dict):  # podman: {"network name": [aliases]}
        aliases = aliases.get(network) or [a for v in aliases.values() if isinstance(v, list) for a in v]
    if not isinstance(aliases, list):
        raise CniError(INVALID_CONFIG, "runtimeConfig.aliases must be a list of names")
    names = [str(a) for a in aliases]
    pod = args.get("K8S_POD_NAME", "")
    if pod and _dns_label(pod) and pod.lower() not in (n.lower() for n in names):
        names.append(pod)  # podman passes the container name here: it resolves like a Docker container's name
    if names:
        cfg["Aliases"] = names
    body: dict[str, Any] = {"EndpointConfig": cfg} if cfg else {}
    ports = rt.get("portMappings") or []
    if not isinstance(ports, list):
        raise CniError(INVALID_CONFIG, "runtimeConfig.portMappings must be a list")
    if ports:
        body["Ports"] = [
            {
                "HostIp": str(p.get("hostIP") or ""),
                "HostPort": p.get("hostPort", 0),
                "ContainerPort": p.get("containerPort"),
                "Proto": str(p.get("protocol") or "tcp").lower(),
            }
            for p in ports
            if isinstance(p, dict)
        ]
    return body


def _dns_label(name: str) -> bool:
    return 0 < len(name) <= 63 and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


def build_result(version: str, ep: dict[str, Any], netns: str, prev: Any) -> dict[str, Any]:
    """The CNI result for one netd endpoint (``interfaces``, ``ips``, ``routes``, ``dns``)."""
    old = _version_tuple(version) < (1, 0, 0)
    iface = {"name": ep["Interface"], "mac": ep["MacAddress"], "sandbox": netns}
    before = prev if isinstance(prev, dict) else {}  # a chain's earlier plugins: passed through, netd's added

    def listed(key: str) -> list[Any]:
        value = before.get(key)
        return list(value) if isinstance(value, list) else []

    interfaces = [*listed("interfaces"), iface]
    index = len(interfaces) - 1
    ips: list[dict[str, Any]] = listed("ips")
    routes: list[dict[str, str]] = listed("routes")
    for key, gw_key, default in (("IPv4Address", "Gateway", "0.0.0.0/0"), ("IPv6Address", "IPv6Gateway", "::/0")):
        if not ep.get(key):
            continue
        ip: dict[str, Any] = {"address": ep[key], "interface": index}
        if ep.get(gw_key):
            ip["gateway"] = ep[gw_key]
            routes.append({"dst": default, "gw": ep[gw_key]})
        if old:
            ip["version"] = "6" if ":" in ep[key] else "4"
        ips.append(ip)
    result: dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes}
    if ep.get("Resolver"):
        result["dns"] = {"nameservers": [ep["Resolver"]]}
    elif isinstance(before.get("dns"), dict):
        result["dns"] = before["dns"]
    return result


def error_json(version: str, e: CniError) -> str:
    out: dict[str, Any] = {"cniVersion": version, "code": e.code, "msg": e.msg}
    if e.details:
        out["details"] = e.details
    return json.dumps(out)


def main() -> None:
    env = dict(os.environ)
    version = LATEST
    try:
        stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        plugin = Plugin(env, stdin)
        version = plugin.version
        result = plugin.run()
    except CniError as e:
        print(error_json(version, e))
        sys.stderr.write(f"netd-cni: {e.msg}{': ' + e.details if e.details else ''}\n")
        sys.exit(1)
    if result is not None:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
