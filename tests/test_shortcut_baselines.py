"""The recall shortcut baseline: answer every query with the context's most frequent value."""

import numpy as np
import pytest

from lra.cache import Split
from lra.mqar import FIRST_ID, MqarLoader, context_frequency_accuracy, generate


def classic(keys: int, values: int, pairs: int, n: int) -> dict:
    return {"layout": "classic", "num_keys": keys, "num_values": values, "num_pairs": pairs, "seq_len": n,
            "num_examples": 30, "seed": 0}


def test_hand_counted_sequences():
    params = classic(keys=4, values=3, pairs=3, n=16)
    value = lambda v: FIRST_ID + 4 + v  # classic layout: value ids follow the key ids
    inputs = np.ones((2, 16), dtype=np.int32)
    targets = np.full((2, 16), -100)
    # sequence 0: values 2, 2, 0 -> the rule answers 2; its queries ask for 2 and 0: one of two right
    inputs[0, 1:6:2] = [value(2), value(2), value(0)]
    targets[0, [8, 10]] = [2, 0]
    # sequence 1: values 0, 1, 2, a three-way tie -> each answer right with chance 1/3; one query
    inputs[1, 1:6:2] = [value(0), value(1), value(2)]
    targets[1, 12] = 1
    split = Split(inputs, targets)
    assert context_frequency_accuracy(split, params) == pytest.approx((1 + 0 + 1 / 3) / 3)


@pytest.mark.parametrize("layout", ["classic", "single"])
def test_agrees_with_a_count_from_the_generator_values(layout):
    params = {**classic(keys=8, values=4, pairs=6, n=64), "layout": layout}
    split = generate(params, 200, seed=5)
    # independent count: per scored query, the share of its sequence's modal values that equal it
    expected = []
    for inputs, targets in zip(split.inputs, split.targets):
        if layout == "classic":
            values = [int(t) - FIRST_ID - 8 for t in inputs[1:12:2]]
        else:
            values = [(int(t) - FIRST_ID) % 4 for t in inputs[:6]]
        top = max(values.count(v) for v in range(4))
        modal = [v for v in range(4) if values.count(v) == top]
        expected += [(t in modal) / len(modal) for t in targets if t != -100]
    assert MqarLoader().shortcut_baselines(split, params) == {"context_frequency": pytest.approx(np.mean(expected))}
    assert 0.25 < np.mean(expected) < 1.0  # values repeat within a context: above chance (1/4)
