"""Config: strict TOML schema, errors naming the key path, byte sizes, defaults."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgeloop.shared import config
from edgeloop.shared.config import Budget, ByteSize, Config, SamplingConfig, SignalConfig
from edgeloop.shared.errors import ConfigError

DESIGN_EXAMPLE = """
[sampling]
budget = { per_hour = 120, bytes_per_hour = "20MB" }
[[sampling.signals]]
kind = "confidence_band"
low = 0.35
high = 0.65
weight = 1.0
"""


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    return str(info.value)


# --- valid files and defaults -------------------------------------------------------------------

def test_design_example_parses():
    cfg = config.loads(DESIGN_EXAMPLE)
    b = cfg.sampling.budget
    assert b.per_hour == 120.0 and isinstance(b.per_hour, float)
    assert b.bytes_per_hour == 20_000_000 and isinstance(b.bytes_per_hour, ByteSize)
    assert b.window_s == 60.0
    assert b.per_window == pytest.approx(2.0)
    assert b.bytes_per_window == pytest.approx(20_000_000 / 60)
    assert cfg.sampling.signals == (SignalConfig("confidence_band", weight=1.0, low=0.35, high=0.65),)
    assert cfg.sampling.seed == 0 and cfg.sampling.min_value == 0.0


def test_full_example_parses():
    cfg = config.loads("""
        [sampling]
        budget = { per_hour = 30, bytes_per_hour = "16MiB", window_s = 10 }
        seed = 7
        min_value = 0.25
        [[sampling.signals]]
        kind = "least_confidence"
        [[sampling.signals]]
        kind = "random"
        weight = 0.1
    """)
    assert cfg.sampling == SamplingConfig(
        budget=Budget(per_hour=30.0, bytes_per_hour=ByteSize(16 << 20), window_s=10.0),
        signals=(SignalConfig("least_confidence"), SignalConfig("random", weight=0.1)),
        min_value=0.25, seed=7)


def test_defaults_when_no_file():
    cfg = config.load(None)
    assert cfg == Config()
    assert cfg.sampling.budget == Budget(per_hour=None, bytes_per_hour=None, window_s=60.0)
    assert cfg.sampling.budget.per_window == float("inf")
    assert [s.kind for s in cfg.sampling.signals] == ["least_confidence", "margin", "random"]


@pytest.mark.parametrize("text", ["", "[sampling]", "[sampling]\nbudget = {}", "[sampling.budget]"])
def test_empty_tables_give_defaults(text):
    assert config.loads(text) == Config()


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "edgeloop.toml"
    path.write_text(DESIGN_EXAMPLE)
    assert config.load(path) == config.loads(DESIGN_EXAMPLE)
    assert config.load(str(path)) == config.loads(DESIGN_EXAMPLE)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("text", [
    "[sampling", "sampling = ", "a = 1\na = 2", "[sampling]\nbudget = { per_hour = 1,, }",
    "kind = \"confidence_band\"; low = 0.35",  # the semicolon form is not TOML
])
def test_invalid_toml_is_a_config_error(text, tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.loads(text)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


# --- unknown keys, wrong types ------------------------------------------------------------------

@pytest.mark.parametrize("text, path, key", [
    ("colour = 1", "config", "colour"),
    ("[sampling]\nbugdet = { per_hour = 1 }", "sampling", "bugdet"),
    ("[sampling]\nbudget = { per_hour = 1, per_hr = 2 }", "sampling.budget", "per_hr"),
    ("[sampling.budget]\nwindow = 60", "sampling.budget", "window"),
    ("[[sampling.signals]]\nkind = \"margin\"\nwieght = 1.0", "sampling.signals[0]", "wieght"),
    ("[[sampling.signals]]\nkind = \"margin\"\n[[sampling.signals]]\nkind = \"entropy\"\nlo = 0.1",
     "sampling.signals[1]", "lo"),
], ids=["top", "sampling", "budget-inline", "budget-table", "signal-0", "signal-1"])
def test_unknown_keys_refused_with_their_path(text, path, key):
    msg = refused(text)
    assert msg.startswith(f"{path}: unknown key(s) {key}"), msg
    assert "allowed:" in msg


def test_unknown_key_message_lists_the_allowed_keys():
    msg = refused("[sampling]\nbudget = { per_hr = 1 }")
    assert all(k in msg for k in ("per_hour", "bytes_per_hour", "window_s"))


@pytest.mark.parametrize("text, path", [
    ("sampling = 1", "sampling"),
    ("sampling = [1]", "sampling"),
    ("[sampling]\nbudget = 5", "sampling.budget"),
    ("[sampling]\nbudget = { per_hour = \"many\" }", "sampling.budget.per_hour"),
    ("[sampling]\nbudget = { per_hour = true }", "sampling.budget.per_hour"),
    ("[sampling]\nbudget = { per_hour = [1] }", "sampling.budget.per_hour"),
    ("[sampling]\nbudget = { window_s = \"60s\" }", "sampling.budget.window_s"),
    ("[sampling]\nbudget = { bytes_per_hour = 1.5 }", "sampling.budget.bytes_per_hour"),
    ("[sampling]\nbudget = { bytes_per_hour = \"lots\" }", "sampling.budget.bytes_per_hour"),
    ("[sampling]\nbudget = { bytes_per_hour = -1 }", "sampling.budget.bytes_per_hour"),
    ("[sampling]\nbudget = { bytes_per_hour = true }", "sampling.budget.bytes_per_hour"),
    ("[sampling]\nsignals = { kind = \"margin\" }", "sampling.signals"),
    ("[sampling]\nsignals = [\"margin\"]", "sampling.signals[0]"),
    ("[[sampling.signals]]\nkind = 3", "sampling.signals[0].kind"),
    ("[[sampling.signals]]\nkind = \"margin\"\nweight = \"1\"", "sampling.signals[0].weight"),
    ("[[sampling.signals]]\nkind = \"margin\"\nlow = false", "sampling.signals[0].low"),
    ("[sampling]\nseed = 1.5", "sampling.seed"),
    ("[sampling]\nseed = true", "sampling.seed"),
    ("[sampling]\nseed = \"0\"", "sampling.seed"),
    ("[sampling]\nmin_value = \"0\"", "sampling.min_value"),
    ("[sampling]\nmin_value = 1979-05-27", "sampling.min_value"),
])
def test_wrong_types_refused_with_their_path(text, path):
    msg = refused(text)
    assert msg.startswith(f"{path}: "), msg


@pytest.mark.parametrize("text, path, detail", [
    ("[[sampling.signals]]\nkind = \"magic\"", "sampling.signals[0]", "magic"),
    ("[[sampling.signals]]\nkind = \"confidence_band\"\nlow = 0.7\nhigh = 0.3", "sampling.signals[0]", "low"),
    ("[[sampling.signals]]\nkind = \"confidence_band\"\nhigh = 1.5", "sampling.signals[0]", "high"),
    ("[sampling]\nbudget = { window_s = 0 }", "sampling.budget", "window_s"),
    ("[sampling]\nbudget = { window_s = -5 }", "sampling.budget", "window_s"),
    ("[sampling]\nbudget = { per_hour = -1 }", "sampling.budget", "per_hour"),
])
def test_invalid_values_refused_with_their_path(text, path, detail):
    msg = refused(text)
    assert msg.startswith(f"{path}: ") and detail in msg, msg


# --- byte sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (1234, 1234), (0, 0), ("1234", 1234), ("1234B", 1234), ("7b", 7),
    ("20MB", 20_000_000), ("20 MB", 20_000_000), ("20mb", 20_000_000), (" 20MB ", 20_000_000),
    ("16MiB", 16 * 2**20), ("16mib", 16 * 2**20), ("1KiB", 1024), ("1KB", 1000), ("1.5KB", 1500),
    ("2GiB", 2 * 2**30), ("3GB", 3 * 10**9), ("1TB", 10**12), ("1TiB", 2**40),
], ids=repr)
def test_byte_sizes_parsed(value, expected):
    size = config.parse_size(value, "x")
    assert size == expected and isinstance(size, ByteSize)


@pytest.mark.parametrize("value", ["20MB", "16MiB", 1234])
def test_byte_sizes_parsed_from_toml(value):
    literal = f'"{value}"' if isinstance(value, str) else str(value)
    cfg = config.loads(f"[sampling]\nbudget = {{ bytes_per_hour = {literal} }}")
    assert cfg.sampling.budget.bytes_per_hour == config.parse_size(value, "x")
    assert isinstance(cfg.sampling.budget.bytes_per_hour, ByteSize)


@pytest.mark.parametrize("value", [
    -1, 1.5, True, None, [], "", "MB", "-1MB", "20XB", "20 M B", "1e6", "20MBB", "0x10", "twenty",
], ids=repr)
def test_bad_byte_sizes_refused(value):
    with pytest.raises(ConfigError, match=r"^budget\.bytes_per_hour: "):
        config.parse_size(value, "budget.bytes_per_hour")


@pytest.mark.parametrize("value", ["5iB", "5 IB", "1" * 400, "1" * 310 + "TB"], ids=lambda v: repr(v[:12]))
def test_malformed_byte_sizes_are_config_errors(value):
    with pytest.raises(ConfigError):
        config.parse_size(value, "budget.bytes_per_hour")


def test_signal_without_kind_is_a_config_error():
    msg = refused("[[sampling.signals]]\nweight = 1.0")
    assert msg.startswith("sampling.signals[0]") and "kind" in msg


@pytest.mark.parametrize("text", [
    "[sampling]\nbudget = { window_s = nan }",
    "[sampling]\nbudget = { window_s = inf }",
    "[sampling]\nbudget = { per_hour = nan }",
    "[sampling]\nmin_value = nan",
    "[[sampling.signals]]\nkind = \"margin\"\nweight = nan",
], ids=["window_s-nan", "window_s-inf", "per_hour-nan", "min_value-nan", "weight-nan"])
def test_non_finite_numbers_refused(text):
    refused(text)


# --- property: junk in, Config or ConfigError out -----------------------------------------------

SCHEMA_KEYS = ["sampling", "budget", "per_hour", "bytes_per_hour", "window_s", "signals", "kind",
               "weight", "low", "high", "n", "interval_s", "max_share", "min_count", "min_distance", "memory",
               "tag", "values", "min_value", "seed"]
keys = st.sampled_from(SCHEMA_KEYS) | st.text(max_size=8)
scalars = (st.text(max_size=12) | st.sampled_from(list(config.SIGNAL_KINDS) + ["20MB", "16MiB", "0"])
           | st.integers() | st.floats() | st.booleans())
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
                    max_leaves=16)


def _config_or_config_error(raw) -> None:
    try:
        result = config.parse(raw, Config)
    except ConfigError:
        return
    assert isinstance(result, Config)


@settings(max_examples=300, report_multiple_bugs=False)
@given(st.dictionaries(keys, junk, max_size=4))
@example({"sampling": {"signals": [{}]}})
@example({"sampling": {"budget": {"bytes_per_hour": "5iB"}}})
@example({"sampling": {"budget": {"bytes_per_hour": "9" * 400}}})
def test_junk_gives_config_or_config_error(raw):
    _config_or_config_error(raw)


# The same property over config-shaped junk: mostly the right keys and mostly plausible values, so that
# the deeper validation paths (Budget, SignalConfig) are reached. It avoids the known bugs above
# ('kind' is always present, no '...iB' sizes, no 300-digit numbers) so it stays green while they are open.
_KNOWN_SIZE_BUG = re.compile(r"i\s*b\s*$", re.I)  # '5iB' -> KeyError
leaf = (st.text(max_size=12).filter(lambda s: not _KNOWN_SIZE_BUG.search(s)) | st.integers() | st.floats()
        | st.booleans() | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
numbers = st.integers(-10, 10**6) | st.floats(-10, 10**4) | st.floats()
sizes = st.sampled_from(["20MB", "16MiB", "0", "1.5KB", "7 kib", "MB", ""]) | st.integers(-10, 10**9)


@st.composite
def mostly(draw, good):
    """`good` three times in four, else a junk leaf."""
    return draw(good) if draw(st.booleans()) or draw(st.booleans()) else draw(leaf)


@st.composite
def tables(draw, fields):
    out = {k: draw(s) for k, s in fields.items() if draw(st.booleans())}
    if draw(st.integers(0, 15)) == 9:  # now and then an unknown key
        out[draw(st.text(max_size=5))] = draw(leaf)
    return out


signal_tables = st.builds(lambda kind, rest: {"kind": kind, **rest},
                          mostly(st.sampled_from(config.SIGNAL_KINDS)),
                          tables({"weight": mostly(numbers), "low": mostly(st.floats(-0.5, 1.5)),
                                  "high": mostly(st.floats(-0.5, 1.5)), "n": mostly(st.integers(-2, 100)),
                                  "interval_s": mostly(numbers), "max_share": mostly(st.floats(-0.5, 1.5)),
                                  "min_count": mostly(st.integers(-2, 100)),
                                  "min_distance": mostly(st.floats(-0.5, 2.5)),
                                  "memory": mostly(st.integers(-2, 10**6)), "tag": mostly(st.text(max_size=4)),
                                  "values": mostly(st.lists(st.text(max_size=4), max_size=3))}))
sampling_tables = tables({
    "budget": mostly(tables({"per_hour": mostly(numbers), "bytes_per_hour": mostly(sizes),
                             "window_s": mostly(numbers)})),
    "signals": mostly(st.lists(signal_tables, max_size=3)),
    "min_value": mostly(numbers), "seed": mostly(st.integers()),
})


@settings(max_examples=300)
@given(tables({"sampling": mostly(sampling_tables)}))
def test_config_shaped_junk_gives_config_or_config_error(raw):
    _config_or_config_error(raw)


@given(st.integers(0, 10**6), st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"]))
def test_byte_size_property(n, unit):
    expected = n * config._UNITS[unit.upper()]
    assert config.parse_size(f"{n}{unit}", "x") == expected
    assert config.parse_size(f"{n} {unit.lower()}", "x") == expected


def test_every_toml_example_in_the_readme_loads():
    """The README's configuration examples are what people copy: each must load as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        if block.lstrip().startswith("# hub-policy.toml"):  # the hub's policy file, read by hub serve --policy
            import tomllib

            from edgeloop.hub.training.policy import PolicyConfig, load_policy

            path = Path(__import__("tempfile").mkdtemp()) / "hub-policy.toml"
            path.write_text(block)
            policy = load_policy(path)
            assert isinstance(policy, PolicyConfig) and policy.on
            assert set(tomllib.loads(block)["policy"]) <= set(vars(policy)), block
            continue
        cfg = config.loads(block)
        assert cfg.sampling.signals, block
