"""Routing attention against `routing-transformer`'s KmeansAttention (same centroids, float64), full
attention when one cluster holds every token, the k-means step by hand, and MACs.

Mutations tried, each failing test_agrees_with_peer_package: keys ranked by their raw (not unit)
similarity to the centroids; a query picked by several clusters given the sum of their outputs
instead of the mean; queries routed by the keys' ranking.
"""

from functools import partial

import pytest
import torch

from attention_support import HEAD_DIM, HEADS, dense_attention, fvcore_macs, layer, qkv, real_rows
from methods import create_attention

EXACT = dict(atol=1e-10, rtol=1e-10)

routing = partial(layer, "routing")


@pytest.mark.parametrize("clusters, window", [(4, 16), (3, 16), (8, 4), (2, 40)])
def test_agrees_with_peer_package(monkeypatch, clusters, window):
    import routing_transformer.routing_transformer as package

    n = 64
    ours = routing(n, clusters=clusters, window=window)
    peer = package.KmeansAttention(clusters, window, HEADS, HEAD_DIM).double().eval()
    with torch.no_grad():
        peer.kmeans.means.copy_(ours.centroids)
        peer.kmeans.initted.fill_(True)
    # The package divides each query's summed outputs by (times picked + 1e-5); a negligible eps
    # makes that the plain mean we compute, so the comparison can hold to float64 precision.
    monkeypatch.setattr(package, "scatter_mean", partial(package.scatter_mean, eps=1e-300))
    q, k, v = qkv(n, seed=1)
    expected, _ = peer(q, k, v)
    torch.testing.assert_close(ours(q, k, v), expected, **EXACT)


@pytest.mark.parametrize("n, window", [(32, 32), (32, 100), (30, 0)])
def test_one_cluster_of_every_token_is_full_attention(n, window):
    ours = routing(n, clusters=1, window=window)
    q, k, v = qkv(n, seed=1)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, n // 2 :] = False
    torch.testing.assert_close(ours(q, k, v), dense_attention(q, k, v), **EXACT)
    out = ours(q, k, v, key_padding_mask=mask)
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], dense_attention(q, k, v, key_padding_mask=mask)[real], **EXACT)


def test_training_step_moves_centroids_to_the_unit_mean_of_their_real_members():
    """Mutations tried, failing here: padded tokens counted as members; the farthest centroid chosen."""
    n, clusters = 24, 3
    ours = routing(n, clusters=clusters, window=8, ema_decay=0.0)
    q, k, v = qkv(n, seed=1)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 16:] = False
    before = ours.centroids.clone()
    ours(q, k, v, key_padding_mask=mask)
    assert torch.equal(ours.centroids, before), "evaluation leaves the centroids alone"
    ours.train()(q, k, v, key_padding_mask=mask)
    for head in range(HEADS):
        points = [x[b, head, i] / x[b, head, i].norm() for x in (q, k) for b in range(2) for i in range(n) if mask[b, i]]
        nearest = [int(torch.argmax(before[head] @ p)) for p in points]
        for c in range(clusters):
            members = [p for p, j in zip(points, nearest) if j == c]
            expected = sum(members) / sum(members).norm() if members else before[head, c]
            torch.testing.assert_close(ours.centroids[head, c], expected, **EXACT)


@pytest.mark.parametrize("n, options", [(64, {"clusters": 4, "window": 16}), (50, {"clusters": 3, "window": 20}), (40, {})])
def test_macs_match_fvcore(n, options):
    ours = routing(n, **options)
    assert fvcore_macs(ours, n) == (ours.macs(n), {})


def test_cost_grows_with_window_at_fixed_clusters():
    costs = [routing(1024, window=w).macs(1024) for w in (1, 8, 32, 33, 1024)]
    assert costs == sorted(costs) and len(set(costs)) == 5


def test_options_are_validated():
    from bench_common import BenchError

    with pytest.raises(BenchError, match="ema_decay"):
        routing(16, ema_decay=1.0)
    with pytest.raises(BenchError, match="did you mean 'window'"):
        create_attention("routing", num_heads=1, head_dim=4, max_seq_len=8, windw=3)
