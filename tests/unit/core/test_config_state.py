import json
from pathlib import Path

import pytest

from netd.core.config import load_settings
from netd.core.errors import InvalidError, StateError
from netd.core.model import DesiredState, Netns
from netd.engine.state import StateStore


def test_toml_with_docker_keys_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "netd.toml"
    cfg.write_text(
        'ip-forward = false\nstate_dir = "/tmp/x"\n[default_bridge]\nbip = "10.55.0.1/24"\n'
        'ip-masq = false\nfixed-cidr = "10.55.0.128/25"\nmtu = 1400\n'
    )
    monkeypatch.setenv("NETD_IP_FORWARD", "true")
    monkeypatch.setenv("NETD_DEFAULT_BRIDGE__ICC", "false")
    s = load_settings(cfg)
    assert s.ip_forward is True  # env beats the file
    assert str(s.default_bridge.bip) == "10.55.0.1/24"
    assert s.default_bridge.ip_masq is False
    assert s.default_bridge.icc is False
    assert s.default_bridge.mtu == 1400
    assert s.state_file == Path("/tmp/x/state.json")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("foo = 1\n", "foo: unknown key"),
        ("[default_bridge]\nbipp = '1.2.3.4/24'\n", "default_bridge.bipp: unknown key"),
        ("[default_bridge]\nmtu = 10\n", "default_bridge.mtu"),
        ("[default_bridge]\nbip = '10.0.0.1/24'\nfixed-cidr = '10.1.0.0/24'\n", "fixed-cidr"),
        ("[firewall]\nbackend = 'pf'\n", "firewall.backend"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "netd.toml"
    cfg.write_text(text)
    with pytest.raises(InvalidError) as e:
        load_settings(cfg)
    assert needle in e.value.message
    assert str(cfg) in e.value.message


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_state_roundtrip_journal_and_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state.json")
    assert store.load() == DesiredState()
    s1 = DesiredState(netns={"a": Netns(name="a")})
    store.save(s1)
    s2 = s1.copy_for_change()
    s2.netns["b"] = Netns(name="b")
    del s2.netns["a"]
    store.save(s2)  # each change goes to the journal as puts and deletes of the objects it touched
    lines = [json.loads(line) for line in (tmp_path / "state.json.journal").read_text().splitlines()]
    records = [r for line in lines for r in (line["records"] if line["op"] == "batch" else [line])]
    assert [(r["op"], r["key"]) for r in records] == [("put", "a"), ("put", "b"), ("del", "a")]
    assert len(lines) == 2  # one line per change: a crash keeps a change whole or not at all
    assert StateStore(tmp_path / "state.json").load() == s2
    monkeypatch.setattr("netd.engine.state.COMPACT_EVERY", 2)
    s3 = s2.copy_for_change()
    s3.netns["c"] = Netns(name="c")
    store.save(s3)  # the journal is full: a snapshot, the journal gone
    assert not (tmp_path / "state.json.journal").exists()
    assert StateStore(tmp_path / "state.json").load() == s3
    s4 = s3.copy_for_change()
    for name in "defg":
        s4 = s4.copy_for_change()
        s4.netns[name] = Netns(name=name)
        store.save(s4)  # compacts again along the way: the replaced snapshot is kept as .prev
    assert json.loads((tmp_path / "state.json.prev").read_text())["netns"].keys() >= {"b", "c"}
    assert StateStore(tmp_path / "state.json").load() == s4
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_torn_journal_line_is_ignored_but_a_bad_record_stops(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.load()
    s1 = DesiredState(netns={"a": Netns(name="a")})
    store.save(s1)
    s2 = s1.copy_for_change()
    s2.netns["b"] = Netns(name="b")
    store.save(s2)
    journal = tmp_path / "state.json.journal"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op":"put","map":"ne')  # a crash mid-append
    assert StateStore(tmp_path / "state.json").load() == s2
    journal.write_bytes(b'{"op":"put","map":"netns","key":"x","value":{"nome":"x"}}\n' + good)
    with pytest.raises(StateError, match="line 1 is not a valid record"):
        StateStore(tmp_path / "state.json").load()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"schema_version": 99}', "newer than this netd understands"),
        (b'{"networks": {}}', "no schema_version"),
        (b'{"schema_version": 1, "networks": {"x": {"name": 3}}}', "networks.x"),
    ],
)
def test_corrupt_state_is_refused_and_kept(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match=needle):
        StateStore(path).load()
    assert path.read_bytes() == content


def test_copy_for_change_leaves_the_original_alone() -> None:
    s1 = DesiredState(netns={"a": Netns(name="a")})
    s2 = s1.copy_for_change()
    s2.netns["b"] = Netns(name="b")
    del s2.netns["a"]
    assert list(s1.netns) == ["a"] and list(s2.netns) == ["b"]
