"""The notes under the accuracy table say what its numbers cover."""

import json

from harness.cli import main
from report_support import add_run


def test_average_note_names_the_methods_it_leaves_out(tmp_path, capsys):
    """A method that failed everywhere is not in the Avg's 'every run is ok': the note says so."""
    out = tmp_path / "out"
    for seed in (0, 1):
        add_run(out, "mqar", "full", seed)
        path = add_run(out, "mqar", "performer", seed)
        record = json.loads(path.read_text())
        record.update(status="diverged", reason="loss is nan")
        path.write_text(json.dumps(record))
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    index = (out / "report" / "index.md").read_text()
    assert ("Avg covers the tasks where every run is ok: mqar, counting only methods with some ok run; "
            "performer has none, hence no Avg.") in index
