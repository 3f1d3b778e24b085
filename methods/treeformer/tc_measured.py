"""TC's implementations per device type and (n, h), fastest first: read by `tc_choice`.

Written by scripts/measure_tc_implementations.py from the measurements in
results/treeformer_speed/tc_implementations.md; rerun the script rather than editing this file."""

RANKING = {  # device type: [(seq_len, height, (fastest, ..., slowest)), ...]
    'cpu': [
        (128, 2, ('fused-path', 'all-nodes', 'path')),
        (128, 4, ('fused-path', 'all-nodes', 'path')),
        (128, 6, ('fused-path', 'all-nodes', 'path')),
        (256, 2, ('fused-path', 'all-nodes', 'path')),
        (256, 4, ('fused-path', 'all-nodes', 'path')),
        (256, 6, ('fused-path', 'all-nodes', 'path')),
        (256, 8, ('fused-path', 'path', 'all-nodes')),
        (1024, 2, ('fused-path', 'all-nodes', 'path')),
        (1024, 4, ('fused-path', 'all-nodes', 'path')),
        (1024, 6, ('fused-path', 'all-nodes', 'path')),
        (1024, 8, ('fused-path', 'path', 'all-nodes')),
        (1024, 10, ('fused-path', 'path', 'all-nodes')),
        (4096, 2, ('fused-path', 'all-nodes', 'path')),
        (4096, 4, ('fused-path', 'all-nodes', 'path')),
        (4096, 6, ('fused-path', 'all-nodes', 'path')),
        (4096, 8, ('fused-path', 'path', 'all-nodes')),
        (4096, 10, ('fused-path', 'path', 'all-nodes')),
        (8192, 2, ('fused-path', 'all-nodes', 'path')),
        (8192, 4, ('fused-path', 'all-nodes', 'path')),
        (8192, 6, ('fused-path', 'all-nodes', 'path')),
        (8192, 8, ('fused-path', 'path', 'all-nodes')),
    ],
}
MEASURED = {
    'cpu': {'machine': 'AMD EPYC, 2 cores', 'threads': 1, 'commit': '499cae3a4431b45923a86c3cd1a3f262903c53e9', 'time': '2026-12-05T17:41:31+00:00', 'note': 'Idle machine: nothing else ran beside it.', 'source': 'results/treeformer_speed/tc_implementations.md'},
}
