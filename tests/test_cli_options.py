"""`--option METHOD.KEY=VALUE` gives one method an attention option in a mixed sweep (and beside
--match-macs); --set of an option some methods lack is refused with a line naming the method that
lacks it and pointing to --option. Dry runs only: nothing trains."""

import json

import pytest

from harness.cli import main

BASE = ["run", "--suite", "smoke", "--tasks", "mqar", "--seeds", "0", "--device", "cpu", "--dry-run"]

# (id, flags, exit status, {method: its attention options} planned, or substrings of the one error line)
CASES = [
    ("option-in-a-mixed-run", ["--methods", "full,treeformer-tf", "--option", "treeformer-tf.height=3"], 0,
     {"full": {}, "treeformer-tf": {"height": 3}}),
    ("two-options-two-methods", ["--methods", "linformer,treeformer-tf", "--option", "treeformer-tf.height=3",
                                 "--option", "linformer.k=8"], 0, {"linformer": {"k": 8}, "treeformer-tf": {"height": 3}}),
    ("set-in-a-mixed-run", ["--methods", "full,treeformer-tf", "--set", "model.attention_options.height=3"], 2,
     ["attention method 'full': unknown option 'height'", "use --option METHOD.KEY=VALUE"]),
    ("set-beside-match-macs", ["--methods", "linformer", "--match-macs", "treeformer-tf",
                               "--set", "model.attention_options.k=8"], 2,
     ["attention method 'treeformer-tf': unknown option 'k'", "every method of the sweep", "--option"]),
    ("option-chosen-by-matching", ["--methods", "linformer", "--match-macs", "treeformer-tf", "--option", "linformer.k=8"],
     2, ["--option linformer.k: matching MACs to treeformer-tf chooses linformer's k"]),
    ("option-misspelt-key", ["--methods", "full,treeformer-tf", "--option", "treeformer-tf.heigt=3"], 2,
     ["attention method 'treeformer-tf': unknown option 'heigt' (did you mean 'height'?)"]),
    ("option-method-not-in-sweep", ["--methods", "full", "--option", "linformer.k=8"], 2,
     ["--option linformer.k=8: method 'linformer' is not in this sweep (its methods: full)"]),
    ("option-without-method", ["--methods", "full", "--option", "k=8"], 2, ["--option k=8: expected METHOD.KEY=VALUE"]),
    ("option-wrong-type", ["--methods", "treeformer-tf", "--option", "treeformer-tf.height=tall"], 2,
     ["attention method 'treeformer-tf' option 'height': expected an integer, got 'tall'"]),
]


@pytest.mark.parametrize("flags, status, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_per_method_options(tmp_path, capsys, flags, status, expected):
    argv = [*BASE, "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"), *flags]
    assert main(argv) == status
    captured = capsys.readouterr()
    if status == 0:
        planned = [json.loads(line) for line in captured.out.splitlines()]
        assert {p["method"]: p["config"]["model"]["attention_options"] for p in planned} == expected
        return
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for part in expected:
        assert part in captured.err, captured.err
    assert not (tmp_path / "data").exists()  # refused before preparing any data
