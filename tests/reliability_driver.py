"""run_benchmark.py with the tiny test tasks, for tests that run whole sweeps in a subprocess.

It is the real CLI (`harness.cli.main`) plus three test-only additions: the tiny tasks of
conftest.py are found by name, a suite 'reliability' over them is registered, and each resume
from a checkpoint is announced on stderr ("resumed <path> at step N") so a test can tell a
resumed run from one restarted from scratch.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from conftest import TINY_TASKS  # noqa: E402
from harness.sweep import runner  # noqa: E402
from harness.training import loop as train  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.config.suites import Suite, plain, register_suite  # noqa: E402

runner.load_task = lambda name: TINY_TASKS[name]
register_suite(Suite(name="reliability", description="tiny runs for reliability tests",
                     tasks=("tiny-majority",), methods=(plain("full"), plain("sdpa")), family="lra"))

_load_checkpoint = train.load_checkpoint


def _announcing_load(path):
    state = _load_checkpoint(path)
    if state is not None:
        print(f"resumed {path} at step {state['step']}", file=sys.stderr, flush=True)
    return state


train.load_checkpoint = _announcing_load

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
