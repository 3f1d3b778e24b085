"""`reformer`: LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer", section 2).

Queries and keys are one vector (shared QK): here the mean of the model's q and k, which is a
single linear projection of the input, (W_q + W_k) x / 2. In each of `rounds` hashing rounds a
random rotation R (d x nb/2) hashes every token to the bucket argmax([x R, -x R]) of nb buckets
(angular LSH); tokens are sorted by (bucket, position), the sorted sequence is cut into chunks of
`bucket_size`, and each chunk attends to itself and the chunk before it (the chunks of all rounds
are concatenated, so the first chunk of a round looks back at the last of the previous round).
Keys are the unit-normalised shared vectors; a token attends to itself only when nothing else is
available (its score is set to -5e4). The rounds are combined by their softmax normalisers: each
round's output is weighted by its share of the total exp-score mass, which makes the result one
softmax over all the keys a query saw in any round (a key seen in two rounds counts twice).

Conventions follow the `reformer-pytorch` package's LSHAttention, so the two agree on the same
rotations (tests/test_reformer.py). Generalisations: any length (nb = 2 ceil(n / (2 bucket_size))
buckets; the sorted sequence is filled to nb * bucket_size with padding), and padding: padded keys
are hashed to an extra last bucket, so they sort after every real token and real tokens' chunks do
not depend on what the padding holds; they get no weight.

Rotations are a buffer drawn at construction (a checkpoint keeps them); in training they are
redrawn at every forward, as the paper hashes afresh at each step; evaluation uses the last draw.

Cost: per round, n d nb/2 for hashing and (2 d + 1) n 2 bucket_size for chunked attention, so
O(rounds n bucket_size d); the executed count does not depend on the data (every chunk has the same
size). The cost option is `rounds`: the cost grows linearly in it, whereas with the bucket size
the hashing cost falls as the attention cost rises (not monotone, which matching needs).

Defaults: 2 hashing rounds and chunks of 64, the Reformer of the Nyströmformer authors' LRA rerun
(github.com/mlpen/Nystromformer, LRA/code/lra_config.py "reformer-2", with Hugging Face
transformers' ReformerConfig defaults: lsh_attn_chunk_length 64).
"""

from __future__ import annotations

import math

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, CostOption, check_qkv
from methods.registry import register_attention

SELF_SCORE = -5e4  # a token's score for itself: used only when no other key is available


def bucket_layout(seq_len: int, bucket_size: int) -> tuple[int, int]:
    """(chunk length, number of buckets) for a sequence: an even number of buckets, chunks no longer
    than half the sequence (two chunks already cover it)."""
    chunk = min(bucket_size, math.ceil(seq_len / 2))
    return chunk, 2 * math.ceil(seq_len / (2 * chunk))


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last dim, written with operators the MAC counter knows to be free."""
    return x / (x * x).sum(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


@register_attention("reformer")
class ReformerAttention(AttentionMethod):
    """Reformer LSH attention (Kitaev et al. 2020): shared QK, random-rotation hashing, sorted chunks."""

    capabilities = Capabilities(attention_dropout=True)
    cost_option = CostOption("rounds", minimum=1, maximum_per_token=1.0)

    def __init__(self, num_heads: int, head_dim: int, max_seq_len: int, bucket_size: int = 64, rounds: int = 2):
        super().__init__(num_heads, head_dim, max_seq_len)
        if bucket_size <= 0:
            raise BenchError(f"reformer option bucket_size must be a positive integer, got {bucket_size}")
        if rounds <= 0:
            raise BenchError(f"reformer option rounds must be a positive integer, got {rounds}")
        self.bucket_size = bucket_size
        self.rounds = rounds
        _, buckets = bucket_layout(max_seq_len, bucket_size)
        # One rotation per round, shared by the heads; a shorter sequence uses the first columns.
        self.register_buffer("rotations", torch.randn(head_dim, rounds, buckets // 2))

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        if self.training:
            self.rotations.normal_()
        batch, heads, n, d = q.shape
        chunk, buckets = bucket_layout(n, self.bucket_size)
        length, rounds = chunk * buckets, self.rounds  # length: n filled up to whole chunks
        shared = (q + k) / 2

        if buckets // 2 > self.rotations.shape[-1]:
            raise BenchError(f"reformer was built for sequences of up to {self.max_seq_len} tokens; got {n}")
        with torch.no_grad():  # hashing is a discrete choice: no gradient flows through it
            rotations = self.rotations[:, :, : buckets // 2].to(q.dtype)
            rotated = torch.einsum("bhnd,dri->bhrni", shared, rotations)  # (B, H, r, n, nb/2)
            bucket = torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # (B, H, r, n)
        if key_padding_mask is not None:
            bucket = bucket.masked_fill(~key_padding_mask[:, None, None, :], buckets)
        bucket = torch.cat([bucket, bucket.new_full((batch, heads, rounds, length - n), buckets)], dim=-1)
        position = torch.arange(length, device=q.device)
        order = (bucket * length + position).argsort(dim=-1)  # (B, H, r, L): positions in sorted order

        def sorted_chunks(x):  # (B, H, n, e) -> (B, H, r * nb, chunk, e), filler rows zero
            x = torch.cat([x, x.new_zeros(batch, heads, length - n, x.shape[-1])], dim=2)
            index = order.unsqueeze(-1).expand(-1, -1, -1, -1, x.shape[-1])
            picked = x.unsqueeze(2).expand(-1, -1, rounds, -1, -1).gather(3, index)
            return picked.reshape(batch, heads, rounds * buckets, chunk, x.shape[-1])

        def with_previous(x):  # each chunk followed by the chunk before it
            return torch.cat([x, x.roll(1, dims=2)], dim=3)

        queries = sorted_chunks(shared)
        keys = with_previous(unit_rows(queries))
        values = with_previous(sorted_chunks(v))
        query_pos = order.reshape(batch, heads, rounds * buckets, chunk)
        key_pos = with_previous(query_pos)
        scores = torch.matmul(queries, keys.transpose(-1, -2)) / math.sqrt(d)  # (B, H, r nb, c, 2c)
        if key_padding_mask is None:
            real = (position < n).expand(batch, length)
        else:
            real = torch.cat([key_padding_mask, key_padding_mask.new_zeros(batch, length - n)], dim=1)
        key_real = real[:, None, :].expand(batch, heads, length).gather(2, key_pos.reshape(batch, heads, -1))
        key_real = key_real.reshape(key_pos.shape)  # (B, H, r nb, 2c)
        scores = scores.masked_fill(~key_real[..., None, :], torch.finfo(scores.dtype).min)
        scores = scores.masked_fill(query_pos[..., :, None] == key_pos[..., None, :], SELF_SCORE)

        top = scores.amax(dim=-1, keepdim=True)
        weights = torch.exp(scores - top)  # unnormalised; the rounds are normalised together below
        mass = weights.sum(dim=-1)  # (B, H, r nb, c)
        out = torch.matmul(self.drop_attention(weights), values)  # (B, H, r nb, c, d)

        undo = order.argsort(dim=-1)[..., :n]  # (B, H, r, n): each position's place in the sorted order

        def unsorted(x):  # (B, H, r nb, c, e) -> (B, H, r, n, e)
            x = x.reshape(batch, heads, rounds, length, x.shape[-1])
            return x.gather(3, undo.unsqueeze(-1).expand(-1, -1, -1, -1, x.shape[-1]))

        out, top, mass = unsorted(out), unsorted(top), unsorted(mass.unsqueeze(-1))
        round_weight = torch.exp(top - top.amax(dim=2, keepdim=True))  # (B, H, r, n, 1)
        return (round_weight * out).sum(dim=2) / (round_weight * mass).sum(dim=2)

    def macs(self, seq_len: int) -> int:
        n, d = seq_len, self.head_dim
        chunk, buckets = bucket_layout(n, self.bucket_size)
        length = chunk * buckets
        hashing = n * d * buckets // 2
        attention = length * 2 * chunk * (2 * d + 1)  # scores, exp, weighted values
        combination = n  # exp of each round's maximum
        return self.num_heads * self.rounds * (hashing + attention + combination)
