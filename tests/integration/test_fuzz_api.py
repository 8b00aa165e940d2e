"""Generated bad input over every API route (hypothesis), against one running daemon.

Every body is built to be wrong in at least one place (a wrong type, a bad string, an unknown field, a raw JSON
token such as ``NaN`` or a 5000-digit integer, deep nesting, a lying ``Content-Encoding``).  Each answer must be
a 4xx (never 5xx, never a hang: the client times out), and the kernel and the state file must be exactly as
before the whole run.  The test prints the number of cases and the violations it found.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netdtest import Host, running_host

EXAMPLES = 300
RAW = "@@RAW@@"  # a placeholder string replaced by a raw JSON token after json.dumps

BASE_SUBNET = "172.31.77.0/24"
MTU = "com.docker.network.driver.mtu"
BRIDGE = "com.docker.network.bridge.name"
ICC = "com.docker.network.bridge.enable_icc"


def send(host: Host, method: str, url: str, data: bytes, headers: dict[str, str] | None = None) -> int:
    """One HTTP/1.0 request with any bytes and headers; the status, or -1 when no answer came in 20 s."""
    head = f"{method} {url} HTTP/1.0\r\nHost: netd\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head += f"Content-Length: {len(data)}\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(host.run_dir / "netd.sock"))
        s.sendall(head.encode() + data)
        try:
            resp = b"".join(iter(lambda: s.recv(65536), b""))
        except TimeoutError:
            return -1
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return -2  # not HTTP: the connection was dropped


# -- values that are wrong wherever they appear ----------------------------------------------------------------

BAD_CHARS = [" ", "/", "\n", "\t", "\x00", ":", "%", "@", "é", "\uff11", "\u0661", "\u202e", "\U0001f600", "\\"]
# characters never valid in a netd or Linux name: inserting one makes any string a bad name
bad_char_text = st.builds(
    lambda pre, ch, post: pre + ch + post,
    st.text(max_size=12),
    st.sampled_from(BAD_CHARS),
    st.text(max_size=12),
)
BAD_SUBNETS = [
    "ff0e::/64",
    "fd00:78::%eth0/64",
    "127.0.0.0/8",
    "224.0.0.0/24",
    "0.0.0.0/8",
    "0.0.0.0/0",
    "255.255.255.0/24",
    "240.0.0.0/4",
    "169.254.0.0/16",
    "fe80::/64",
    "::1/128",
    "::/0",
    "::ffff:10.0.0.0/104",
    "10.66.0.0/99",
    "10.66.0.1/24",
    "10.66.0.0/255.255.255.0",
    " 10.66.0.0/24",
    "10.66.0.0/\uff12\uff14",
    "10.66.0.0/31",
    "fd00:66::/127",
    BASE_SUBNET,  # overlaps the network that exists: 409
    "10.66.0.0",
    "1" * 5000,
]
BAD_RANGES = [s for s in BAD_SUBNETS if s != "10.66.0.0/31"]  # a /31 is a fine ip-range inside 10.66.0.0/24
BAD_ADDRESSES = [
    "10.0.0.5/99",
    "172.31.77.5/99",
    "fd00::5%eth0",
    "172.31.77.5%eth0",
    "172.31.77.5 ",
    "\uff11\uff17\uff12.31.77.5",
    "172.31.77.0",
    "172.31.77.255",
    "172.31.77.1",  # the gateway
    "10.0.0.5",  # outside the subnet
    "fe80::1",
    "999.1.1.1",
    "172.31.77.5/255.255.0.0",
]
BAD_MTUS = ["1_500", " 1500", "1500 ", "+1500", "-1", "\uff11\uff15\uff10\uff10", "\u0661\u0665\u0660\u0660", "67"]
BAD_MTUS += ["65536", "1" * 4400, "0x5dc", "1e3", "1500.0", "\u00b9\u2075"]
BAD_PORTS: list[Any] = ["\uff18\uff10", "8_0", " 80", "\u00b2", "9" * 30, -1, 65536, 10**30, 1.5, True, "", None]
BAD_IFNAMES = ["all", "default", ".", "..", "br/0", "br:0", "br 0", "br0\n", "brü", "x" * 16, "bonding_masters"]

RAW_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "1" * 5000,
        "-" + "9" * 4400,
        "[" * 3000 + "]" * 3000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        "[" * 40 + "]" * 40,
        '"\\ud800"',
        '"\\udfff\\ud800"',
        "1.5e308",
    ]
)
wrong_type = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.recursive(st.just([]), lambda inner: st.lists(inner, max_size=2), max_leaves=8),
)


def bad_str(choices: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(choices), bad_char_text)


# -- one site per field: (path in the template, strategy of values that are wrong there) -------------------------
# a path step is a dict key or a list index; a value RAW is replaced by a raw JSON token

Site = tuple[tuple[Any, ...], st.SearchStrategy[Any]]
not_a_str = st.one_of(wrong_type, st.just(RAW))
not_a_bool = st.one_of(
    st.integers(), st.text(max_size=5), st.lists(st.booleans(), max_size=2), st.just(RAW), st.floats()
)
not_an_obj = st.one_of(
    st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2), st.just(RAW)
)
not_a_list = st.one_of(
    st.integers(),
    st.text(min_size=1, max_size=5),
    st.booleans(),
    st.dictionaries(st.text(), st.integers(), min_size=1, max_size=2),
    st.just(RAW),
)

CREATE_SITES: list[Site] = [
    (("Name",), st.one_of(not_a_str, bad_str(["../x", "-x", "a" * 65, "x\n"]))),
    (("Driver",), st.one_of(not_a_str, bad_str(["overlay", "host", "null", "Bridge", "bridge "]))),
    (("Internal",), not_a_bool),
    (("EnableIPv6",), not_a_bool),
    (("CheckDuplicate",), not_a_bool),
    (("Attachable",), not_a_bool),
    (("Labels",), st.one_of(not_an_obj, st.dictionaries(st.text(max_size=4), wrong_type, min_size=1, max_size=2))),
    (("IPAM",), not_an_obj),
    (("IPAM", "Driver"), st.one_of(not_a_str, bad_str(["null", "dhcp", "Default"]))),
    (("IPAM", "Config"), not_a_list),
    (("IPAM", "Config", 0), not_an_obj),
    (("IPAM", "Config", 0, "Subnet"), st.one_of(not_a_str, bad_str(BAD_SUBNETS))),
    (("IPAM", "Config", 0, "Gateway"), st.one_of(not_a_str, bad_str(BAD_ADDRESSES))),
    (("IPAM", "Config", 0, "IPRange"), st.one_of(not_a_str, bad_str(BAD_RANGES))),
    (("IPAM", "Config", 0, "AuxiliaryAddresses"), not_an_obj),
    (("IPAM", "Config", 0, "AuxiliaryAddresses", "r"), st.one_of(not_a_str, bad_str(BAD_ADDRESSES))),
    (("Options",), not_an_obj),
    (("Options", MTU), st.one_of(not_a_str, bad_str(BAD_MTUS))),
    (("Options", BRIDGE), st.one_of(not_a_str, bad_str(BAD_IFNAMES))),
    # not bad_str: " true" is accepted (as Docker's option parsing does), so a random bad character is not enough
    (("Options", ICC), st.one_of(not_a_str, st.sampled_from(["maybe", "2", "tru", "yes please", "\uff11"]))),
]
CONNECT_SITES: list[Site] = [
    (("Netns",), st.one_of(not_a_str, bad_str(["../n2", "nope", "n2\n"]))),
    (("NetnsPath",), st.one_of(not_a_str, bad_str(["/nonexistent/x", "/etc/hostname", "/dev/null", "/", "x/y"]))),
    (("EndpointConfig",), not_an_obj),
    (("EndpointConfig", "IPAMConfig"), not_an_obj),
    (("EndpointConfig", "IPAMConfig", "IPv4Address"), st.one_of(not_a_str, bad_str(BAD_ADDRESSES))),
    (("EndpointConfig", "IPAMConfig", "IPv6Address"), st.one_of(not_a_str, bad_str(BAD_ADDRESSES))),
    (("EndpointConfig", "Aliases"), not_a_list),
    (("EndpointConfig", "Aliases", 0), st.one_of(not_a_str, bad_str(["-a", "a..b", "a" * 64, "wéb", "_x"]))),
    (("Ports",), not_a_list),
    (("Ports", 0), not_an_obj),
    (("Ports", 0, "ContainerPort"), st.one_of(st.sampled_from(BAD_PORTS), bad_char_text, st.just(RAW))),
    (("Ports", 0, "HostPort"), st.one_of(st.sampled_from(BAD_PORTS[:-1]), bad_char_text, st.just(RAW))),
    (("Ports", 0, "HostIp"), st.one_of(not_a_str, bad_str(["fe80::1%eth0", "224.0.0.1", "1.2.3", "::1%1"]))),
    (("Ports", 0, "Proto"), st.one_of(not_a_str, bad_str(["icmp", "TCP ", "tcp6"]))),
]
DISCONNECT_SITES: list[Site] = [
    (("Netns",), st.one_of(not_a_str, bad_str(["../n1", "nope", "n1\n", "n2"]))),  # n2 is not connected: 404
    (("NetnsPath",), st.one_of(not_a_str, bad_str(["/nonexistent/x", "/etc/hostname", "x/y"]))),
]
NETNS_SITES: list[Site] = [
    (("Name",), st.one_of(not_a_str, bad_str(["n1", "-a", "a_b", "a..b", "a" * 64, "wéb", "a.", "-"]))),
]


def create_template(tag: str) -> dict[str, Any]:
    return {
        "Name": f"fz-{tag}",
        "Driver": "bridge",
        "Internal": False,
        "EnableIPv6": False,
        "CheckDuplicate": True,
        "Attachable": True,
        "Labels": {"a": "b"},
        "IPAM": {
            "Driver": "default",
            "Config": [
                {"Subnet": "10.66.0.0/24", "Gateway": "10.66.0.1", "AuxiliaryAddresses": {"r": "10.66.0.9"}}
            ],
        },
        "Options": {MTU: "1400", ICC: "true"},
    }


def connect_template() -> dict[str, Any]:
    return {
        "Netns": "n2",
        "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.31.77.50"}, "Aliases": ["web"]},
        "Ports": [{"ContainerPort": 80, "HostPort": 0, "Proto": "tcp"}],
    }


def put(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``body`` with ``value`` at ``path`` (containers on the way are made as needed)."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        lst = list(body) if isinstance(body, list) else []
        while len(lst) <= step:
            lst.append({})
        lst[step] = put(lst[step], rest, value)
        return lst
    obj = dict(body) if isinstance(body, dict) else {}
    obj[step] = put(obj.get(step), rest, value)
    return obj


def encode(body: Any, token: str) -> bytes:
    return json.dumps(body).replace(json.dumps(RAW), token).encode()


@st.composite
def mutated(draw: st.DrawFn, template: Any, sites: list[Site]) -> bytes:
    """The template with one or two sites given a wrong value, sometimes an unknown field too."""
    body = template
    for path, values in draw(st.lists(st.sampled_from(sites), min_size=1, max_size=2, unique_by=lambda s: s[0])):
        body = put(body, path, draw(values))
    if draw(st.integers(0, 9)) == 0:
        body = put(body, (draw(st.sampled_from(["Bogus", "name", "NAME", "\u0000"])),), 1)
    return encode(body, draw(RAW_TOKENS))


def whole_body() -> st.SearchStrategy[bytes]:
    """Bodies wrong as a whole: not an object, not JSON, not UTF-8, raw tokens."""
    return st.one_of(
        RAW_TOKENS.map(str.encode),
        st.sampled_from([b"[]", b"null", b"1", b'"x"', b"true", b"{not json", b"\xff\xfe", b'{"Name": "a"']).map(
            lambda b: b
        ),
        st.binary(min_size=1, max_size=40).filter(lambda b: not b.strip().startswith(b"{")),
    )


@st.composite
def case(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str], bool]:
    """(method, url, body, headers, must_be_4xx)."""
    bad_name = draw(st.one_of(bad_char_text, st.sampled_from(["nope", "..", ".", "n9", "%2e%2e", "a" * 300])))
    route = draw(st.integers(0, 10))
    headers: dict[str, str] = {}
    if draw(st.integers(0, 14)) == 0:
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "identity, gzip", "x"]))
    if route == 0:
        body = draw(
            st.one_of(
                mutated(create_template(draw(st.text("abc", min_size=1, max_size=6))), CREATE_SITES), whole_body()
            )
        )
        return "POST", "/v1/networks", body, headers, True
    if route in (1, 2):
        net = draw(st.sampled_from(["base", "base", bad_name]))
        body = draw(st.one_of(mutated(connect_template(), CONNECT_SITES), whole_body()))
        return "POST", f"/v1/networks/{quote(net, safe='')}/connect", body, headers, True
    if route == 3:
        net = draw(st.sampled_from(["base", bad_name]))
        body = draw(st.one_of(mutated({"Netns": "n1"}, DISCONNECT_SITES), whole_body()))
        return "POST", f"/v1/networks/{quote(net, safe='')}/disconnect", body, headers, True
    if route == 4:
        body = draw(st.one_of(mutated({"Name": "fz"}, NETNS_SITES), whole_body()))
        return "POST", "/v1/netns", body, headers, True
    if route == 5:
        body = draw(st.one_of(whole_body(), st.just(b'{"Full": true}')))
        return "POST", "/v1/reconcile", body, headers, True
    if route in (6, 7):  # rm of names that do not exist (or "base", which has endpoints: 409)
        what = "networks" if route == 6 else "netns"
        return "DELETE", f"/v1/{what}/{quote(draw(st.sampled_from([bad_name, 'base'])), safe='')}", b"", {}, True
    if route == 8:
        what = draw(st.sampled_from(["networks", "netns"]))
        return "GET", f"/v1/{what}/{quote(bad_name, safe='')}", b"", {}, True
    # routes that take no input: a body or a query must not hurt them (they may answer 200)
    url = draw(st.sampled_from(["/v1/status", "/v1/networks", "/v1/netns", "/v1/plan", "/v1/check"]))
    return "GET", url + draw(st.sampled_from(["", "?x=1", "?" + "a" * 2000])), draw(whole_body()), headers, False


def test_generated_bad_input_gets_4xx_and_changes_nothing(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.api.ok("POST", "/v1/networks", {"Name": "base", "IPAM": {"Config": [{"Subnet": BASE_SUBNET}]}})
        for ns in ("n1", "n2"):
            host.api.ok("POST", "/v1/netns", {"Name": ns})
        host.api.ok("POST", "/v1/networks/base/connect", {"Netns": "n1"})
        kernel, state = host.kernel_snapshot(), host.state_bytes()
        seen: list[tuple[str, str, int]] = []
        violations: list[str] = []

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case())
        def run(c: tuple[str, str, bytes, dict[str, str], bool]) -> None:
            method, url, body, headers, must_4xx = c
            before = host.state_bytes()
            status = send(host, method, url, body, headers)
            seen.append((method, url.split("?")[0][:40], status))
            bad = status < 0 or status >= 500 or (must_4xx and not 400 <= status < 500)
            if bad or host.state_bytes() != before:  # each case that changed the state is counted once
                why = f"status {status}" if bad else "the state file changed"
                violations.append(f"{why}: {method} {url[:80]} {headers} {body[:120]!r}")

        run()
        if host.kernel_snapshot() != kernel:
            violations.append("the kernel changed over the run")
        if host.state_bytes() != state:
            violations.append("the state file changed over the run")
        statuses = sorted({s for _, _, s in seen})
        print(f"\nbad-input fuzz: {len(seen)} cases, statuses {statuses}, {len(violations)} violations")
        for v in violations[:20]:
            print("  ", v)
        assert host.proc is not None and host.proc.poll() is None, "netd died"
        assert not violations, "\n".join(violations[:20])
        assert len(seen) >= EXAMPLES // 2
