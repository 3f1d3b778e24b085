"""TC's implementations per device type and (n, h), fastest first: read by `tc_choice`.

Written by scripts/measure_tc_implementations.py from the measurements in
results/treeformer_speed/tc_implementations.md; rerun the script rather than editing this file."""

RANKING = {  # device type: [(seq_len, height, (fastest, ..., slowest)), ...]
    'cpu': [
        (256, 2, ('all-nodes', 'path')),
        (256, 4, ('all-nodes', 'path')),
        (256, 6, ('all-nodes', 'path')),
        (256, 8, ('path', 'all-nodes')),
        (1024, 2, ('all-nodes', 'path')),
        (1024, 4, ('all-nodes', 'path')),
        (1024, 6, ('all-nodes', 'path')),
        (1024, 8, ('path', 'all-nodes')),
        (1024, 10, ('path', 'all-nodes')),
        (4096, 2, ('all-nodes', 'path')),
        (4096, 4, ('all-nodes', 'path')),
        (4096, 6, ('all-nodes', 'path')),
        (4096, 8, ('path', 'all-nodes')),
        (4096, 10, ('path', 'all-nodes')),
        (8192, 2, ('all-nodes', 'path')),
        (8192, 4, ('all-nodes', 'path')),
        (8192, 6, ('all-nodes', 'path')),
        (8192, 8, ('path', 'all-nodes')),
    ],
}
MEASURED = {
    'cpu': {'machine': 'AMD EPYC, 2 cores', 'threads': 1, 'commit': 'a82e7bcf3428912766c9df68b10b3713b5a23e55', 'time': '2026-12-05T13:48:19+00:00', 'note': 'Idle machine: nothing else ran beside it.', 'source': 'results/treeformer_speed/tc_implementations.md'},
}
