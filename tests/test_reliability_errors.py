"""Bad input everywhere, through the CLI: exit 2, one `error:` line naming the file (and line) or
flag and what was expected, no traceback unless --debug, and no finished record touched."""

import pytest

from harness.cli import main
from reliability_support import one_thread, write_plugin  # noqa: F401


def base_args(tmp_path):
    return ["run", "--suite", "tiny", "--methods", "full", "--out", str(tmp_path / "out"),
            "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--set", "train.steps=4", "--set",
            "train.eval_every=2"]


def tree_state(directory):
    """Every file under `directory` with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path, tiny_suite, one_thread, capsys):
    """An output directory holding one finished run; returns its file state."""
    assert main(base_args(tmp_path)) == 0
    capsys.readouterr()
    state = tree_state(tmp_path / "out")
    assert any(p.name == "seed0.json" for p in state)
    return state


def refused(tmp_path, capsys, finished, *extra):
    """Runs the CLI on the finished directory; checks the refusal and returns its one line."""
    assert main([*base_args(tmp_path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert tree_state(tmp_path / "out") == finished  # nothing written, nothing touched
    return captured.err


CONFIG_FILES = [
    ("bad.json", '{\n  "train": {\n    "steps": 5,\n  }\n}\n', ["bad.json:4:", "malformed JSON"]),
    ("bad.toml", '[train]\nsteps = 5\nlr = \n', ["bad.toml", "malformed TOML", "line 3"]),
    ("bad.yaml", 'train:\n  steps: 5\n  lr: [1,\n', ["bad.yaml:", "malformed YAML"]),
    ("keys.json", '{"trian": {"steps": 5}}', ["keys.json", "unknown key 'trian'", "did you mean 'train'"]),
    ("field.toml", '[train]\nstepz = 5\n', ["field.toml", "unknown key 'stepz'", "did you mean 'steps'"]),
    ("type.yaml", 'train:\n  steps: many\n', ["type.yaml", "train.steps", "expected an integer"]),
    ("list.json", '[1, 2]', ["list.json", "expected a mapping"]),
    ("binary.json", b'\xff\xfe\x00garbage', ["binary.json", "cannot read it"]),
    ("config.ini", '[train]\nsteps=5\n', ["config.ini", "unknown format '.ini'"]),
]


@pytest.mark.parametrize("name, text, expected", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_malformed_config_file_is_refused_naming_file_and_line(tmp_path, capsys, finished, name, text, expected):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = refused(tmp_path, capsys, finished, "--config", str(path))
    for part in expected:
        assert part in line


def test_yaml_error_names_the_line_of_the_fault(tmp_path, capsys, finished):
    path = tmp_path / "late.yaml"
    path.write_text("train:\n  steps: 5\n  lr: 0.1\nmodel: {emb_dim: 16\n")
    assert f"{path}:" in refused(tmp_path, capsys, finished, "--config", str(path))


@pytest.mark.parametrize("assignment, expected", [
    ("train.steps=abc", "--set train.steps: expected an integer, got 'abc'"),
    ("train.steps=-3", "train.steps must be > 0"),
    ("train.stepz=3", "unknown key 'stepz'"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps", "expected key=value"),
    ("train=3", "name a field"),
    ("train.schedule=linear", "expected one of 'rsqrt', 'cosine', 'onecycle', 'constant'"),
    ("train.betas=0.9", "expected 2 comma-separated values"),
    ("train.grad_clip=yes", "expected a number"),
    ("model.num_heads=3", "num_heads"),
    ("model.attention_options={\"window\": 3}", "unknown option 'window'"),
    ("model.attention_options=[1", "expected a JSON object"),
    ("data.num_rows=5", "unknown param 'num_rows'"),
    ("family=wide", "expected one of 'lra', 'uniform'"),
])
def test_bad_set_value_is_refused_naming_the_key(tmp_path, capsys, finished, assignment, expected):
    assert expected in refused(tmp_path, capsys, finished, "--set", assignment)


@pytest.mark.parametrize("flags, expected", [
    (["--methods", "fulll"], "unknown attention method 'fulll'; did you mean 'full'"),
    (["--seeds", "one"], "expected comma-separated integers"),
    (["--tasks", "no-such-task"], "no-such-task"),
    (["--device", "tpu"], "--device: expected cpu, cuda or auto"),
    (["--run-timeout", "5"], "--run-timeout applies to --executor subprocess only"),
    (["--workers", "2"], "--workers applies to --executor subprocess only, not 'local'"),
])
def test_bad_flag_is_refused(tmp_path, capsys, finished, flags, expected):
    assert expected in refused(tmp_path, capsys, finished, *flags)


BROKEN_PLUGINS = {
    "raises": ('''
        import math

        value = math.sqrt(-1)
    ''', ["raises.py:4", "ValueError", "math domain error"]),
    "syntax": ('''
        def broken(:
            pass
    ''', ["syntax.py", "SyntaxError"]),
    "missing_dependency": ('''
        import no_such_dependency_xyz
    ''', ["missing_dependency.py", "no_such_dependency_xyz"]),
    "not_a_method": ('''
        from methods import register_attention

        @register_attention("plain-module")
        class NotAMethod:
            """Forgot to subclass AttentionMethod."""
    ''', ["not_a_method.py", "plain-module", "AttentionMethod"]),
    "duplicate": ('''
        from methods import register_attention
        from methods.full import FullAttention

        @register_attention("full")
        class MyFull(FullAttention):
            """Claims a built-in name."""
    ''', ["duplicate.py", "'full'"]),
}


@pytest.mark.parametrize("name", list(BROKEN_PLUGINS))
def test_broken_plugin_file_is_refused_naming_file_and_line(tmp_path, capsys, finished, restore_attention_registry,
                                                           name):
    source, expected = BROKEN_PLUGINS[name]
    plugin = write_plugin(tmp_path, name, source)
    line = refused(tmp_path, capsys, finished, "--plugin", str(plugin))
    for part in expected:
        assert part in line, line


BROKEN_METHODS = '''
from methods import register_attention
from methods.full import FullAttention


@register_attention("fails-to-build")
class FailsToBuild(FullAttention):
    """Its constructor has a bug."""

    def __init__(self, num_heads=0, head_dim=0, max_seq_len=0):
        super().__init__()
        self.table = [0] * num_heads
        self.first = self.table[num_heads]


@register_attention("macs-raise")
class MacsRaise(FullAttention):
    """Its MAC count has a bug."""

    def macs(self, seq_len):
        return seq_len // 0


@register_attention("macs-negative")
class MacsNegative(FullAttention):
    """Its MAC count is not a count."""

    def macs(self, seq_len):
        return -seq_len
'''


@pytest.mark.parametrize("method, expected", [
    ("fails-to-build", ["fails-to-build", "IndexError"]),
    ("macs-raise", ["macs-raise", "macs", "ZeroDivisionError"]),
    ("macs-negative", ["macs-negative", "macs", "non-negative integer"]),
])
def test_plugin_method_broken_when_built_or_counted_is_refused(tmp_path, capsys, finished,
                                                               restore_attention_registry, method, expected):
    plugin = write_plugin(tmp_path, "broken_methods", BROKEN_METHODS)
    line = refused(tmp_path, capsys, finished, "--plugin", str(plugin), "--methods", method)
    for part in expected:
        assert part in line, line


def test_debug_shows_the_traceback_of_a_refusal(tmp_path, capsys, finished):
    assert main([*base_args(tmp_path), "--set", "train.steps=abc", "--debug"]) == 2  # still bad input: 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip("\n").splitlines()[-1] == "error: --set train.steps: expected an integer, got 'abc'"
    assert tree_state(tmp_path / "out") == finished


def test_finished_record_survives_a_damaged_neighbour(tmp_path, capsys, finished):
    """A damaged record (a crash of an older version mid-write) is redone, the finished one kept."""
    state = dict(finished)
    record = next(p for p in state if p.name == "seed0.json")
    neighbour = record.with_name("seed1.json")
    neighbour.write_text('{"schema": 1, "method": "full", "sta')
    assert main([*base_args(tmp_path), "--seeds", "0,1"]) == 0
    assert (record.read_bytes(), record.stat().st_mtime_ns) == state[record]
    assert '"status": "ok"' in neighbour.read_text()
