"""Runs `run_benchmark.py run` on the tiny test suite in its own process (tests/test_kill_resume.py).

The tiny tasks of conftest.py stand in for the task registry, so the test needs no generated
data; everything else (sweep, runner, loop, checkpoints, records) is the real code path.
Usage: python tests/sweep_driver.py OUT [extra run_benchmark.py flags]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import TINY_TASKS  # noqa: E402
from harness import runner  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.suites import Suite, plain, register_suite  # noqa: E402

runner.load_task = TINY_TASKS.__getitem__
register_suite(Suite(name="tiny", description="kill test", tasks=("tiny-majority",),
                     methods=(plain("full"), plain("sdpa")), seeds=(0, 1), family="lra"))

if __name__ == "__main__":
    sys.exit(main(["run", "--suite", "tiny", "--device", "cpu", "--out", sys.argv[1],
                   "--set", "train.steps=60", "--set", "train.eval_every=10", "--set", "model.dropout=0.1",
                   *sys.argv[2:]]))
