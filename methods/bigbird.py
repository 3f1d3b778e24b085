"""`bigbird`: block-sparse attention with window, global and random blocks (Zaheer et al. 2020).

The sequence is cut into blocks of `block_size` tokens (the last one padded). The pattern is the
paper's ITC variant, the one its LRA configuration uses:

- global: the first and the last block attend to every key, and every query attends to them;
- window: every other block i attends to blocks i - 1, i, i + 1;
- random: every other block also attends to `num_random_blocks` blocks drawn among those it does
  not already see (neither global nor in its window), separately for each head.

The random blocks are fixed for a layer: a seed drawn at construction from torch's global RNG
(so the run's seed decides it) and kept as a buffer (so a checkpoint restores it) draws, for each
number of blocks, a priority of every (head, query block, key block); each query block takes its
eligible key blocks of highest priority (`random_blocks`). With nb blocks, at most r = nb - 5
random blocks are used (every block a middle block does not see already); with nb <= 4 blocks
every query sees every key, and the result is full attention.

Computed block by block, never as an n x n matrix: the global blocks' queries score all keys;
each other block gathers its 5 + r key blocks (two global, three window, r random) and scores
those. For the second and the second-to-last block a window block is also global: the copy is
masked, so no key counts twice. Per head, with nb blocks of b tokens:

    MACs = min(2 b nb b + (nb - 2) b (5 + r) b,  n^2) * (2d + 1)

(a score, a softmax element and a weighted value per scored key). Where the blocks would score
n^2 keys or more (short sequences, many random blocks), the n x n scores are computed and masked
to the same pattern instead, which costs n^2. The count grows with num_random_blocks, the cost
option, and is linear in n for a fixed block size. The block size is not the cost option: the
padding to a multiple of it makes the count jump up and down as it grows.

Padding: padded keys get no weight; a real query always sees its own block.
"""

from __future__ import annotations

import math

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, CostOption, check_qkv
from methods.local import masked_attention, pad_to, padded_keys_mask
from methods.registry import register_attention

FIXED_SLOTS = 5  # the key blocks every non-global block sees: two global and three in its window


@register_attention("bigbird")
class BigBirdAttention(AttentionMethod):
    """BigBird ITC block-sparse attention: global first/last blocks, a 3-block window, random blocks."""

    capabilities = Capabilities(attention_dropout=True)  # on the normalised weights
    cost_option = CostOption("num_random_blocks", minimum=0, maximum_per_token=1.0)

    def __init__(
        self, num_heads: int, head_dim: int, max_seq_len: int, block_size: int = 64, num_random_blocks: int = 3
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        if block_size <= 0:
            raise BenchError(f"bigbird option block_size must be a positive integer, got {block_size}")
        if num_random_blocks < 0:
            raise BenchError(f"bigbird option num_random_blocks must be >= 0, got {num_random_blocks}")
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.register_buffer("pattern_seed", torch.randint(0, 2**62, ()))
        self._random_cache: dict[tuple[int, int], torch.Tensor] = {}

    def geometry(self, seq_len: int) -> tuple[int, int, int, bool]:
        """(block length, number of blocks, random blocks in use, whether the n x n path is cheaper)."""
        block = min(self.block_size, seq_len)
        blocks = math.ceil(seq_len / block)
        r = self.random_blocks_in_use(blocks)
        return block, blocks, r, self.blocked_keys(block, blocks, r) >= seq_len * seq_len

    def random_blocks_in_use(self, blocks: int) -> int:
        """r: no more than the nb - 5 blocks a middle block does not see already."""
        return max(0, min(self.num_random_blocks, blocks - FIXED_SLOTS))

    @staticmethod
    def blocked_keys(block: int, blocks: int, r: int) -> int:
        """Keys the blocked path scores, summed over the queries of one head."""
        if blocks <= 2:
            return (blocks * block) ** 2
        return 2 * block * blocks * block + (blocks - 2) * block * (FIXED_SLOTS + r) * block

    def random_blocks(self, blocks: int) -> torch.Tensor:
        """(heads, blocks - 2, r) long: the random key blocks of query blocks 1 .. blocks - 2."""
        key = (blocks, int(self.pattern_seed))  # a loaded checkpoint brings its own seed
        if key not in self._random_cache:
            generator = torch.Generator().manual_seed(key[1])
            priority = torch.rand(self.num_heads, blocks, blocks, generator=generator)
            rows = torch.arange(1, blocks - 1)[:, None]  # the query blocks that are not global
            cols = torch.arange(blocks)[None, :]
            seen = (cols == 0) | (cols == blocks - 1) | ((cols - rows).abs() <= 1)  # (blocks - 2, blocks)
            priority = priority[:, 1 : blocks - 1].masked_fill(seen, -1.0)
            # Eligible blocks have priority >= 0, and every row has at least r of them.
            self._random_cache[key] = priority.topk(self.random_blocks_in_use(blocks), dim=-1).indices
        return self._random_cache[key]

    def key_blocks(self, blocks: int, device) -> torch.Tensor:
        """(heads, blocks - 2, 5 + r): the key blocks of each non-global query block, global first."""
        rows = torch.arange(1, blocks - 1, device=device)[:, None]
        fixed = torch.cat([torch.zeros_like(rows), torch.full_like(rows, blocks - 1), rows - 1, rows, rows + 1], 1)
        return torch.cat([fixed.expand(self.num_heads, -1, -1), self.random_blocks(blocks).to(device)], dim=-1)

    def block_pattern(self, blocks: int, device) -> torch.Tensor:
        """(heads, blocks, blocks) bool: which key blocks each query block attends to."""
        every = torch.ones(self.num_heads, min(blocks, 2), blocks, dtype=torch.bool, device=device)
        if blocks <= 2:
            return every
        middle = (self.key_blocks(blocks, device)[..., None] == torch.arange(blocks, device=device)).any(dim=-2)
        return torch.cat([every[:, :1], middle, every[:, 1:]], dim=1)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, d = q.shape
        block, blocks, r, dense = self.geometry(n)
        if dense:
            token_block = torch.arange(n, device=q.device) // block
            pattern = self.block_pattern(blocks, q.device)[:, token_block][:, :, token_block]  # (H, n, n)
            real = padded_keys_mask(key_padding_mask, batch, n, n, q.device)
            return masked_attention(q, k, v, pattern & real[:, None, None, :], self.drop_attention)

        padded = blocks * block
        q, k, v = (pad_to(x, padded, dim=2) for x in (q, k, v))  # (B, H, padded, d)
        real = padded_keys_mask(key_padding_mask, batch, n, padded, q.device)
        blocked_q = q.view(batch, heads, blocks, block, d)

        # The global blocks' queries: every key.
        global_q = torch.cat([blocked_q[:, :, 0], blocked_q[:, :, -1]], dim=2)  # (B, H, 2b, d)
        global_out = masked_attention(global_q, k, v, real[:, None, None, :], self.drop_attention)

        # Every other block: its two global, three window and r random key blocks.
        middle, slots = blocks - 2, FIXED_SLOTS + r
        key_blocks = self.key_blocks(blocks, q.device)  # (H, middle, slots)
        # Rows 1 and blocks - 2 have a window block that is also global: mask the copy.
        copy = torch.zeros(middle, slots, 1, dtype=torch.bool, device=q.device)
        copy[0, 2] = copy[-1, 4] = True
        per_head = (key_blocks + torch.arange(heads, device=q.device)[:, None, None] * blocks).reshape(-1)
        keys = k.view(batch, heads * blocks, block, d).index_select(1, per_head)
        values = v.reshape(batch, heads * blocks, block, -1).index_select(1, per_head)
        key_real = real.view(batch, blocks, block).index_select(1, key_blocks.reshape(-1))
        allowed = (key_real.view(batch, heads, middle, slots, block) & ~copy).view(batch, heads, middle, 1, -1)
        middle_out = masked_attention(
            blocked_q[:, :, 1:-1], keys.view(batch, heads, middle, slots * block, d),
            values.view(batch, heads, middle, slots * block, -1), allowed, self.drop_attention,
        )  # (B, H, middle, b, d)

        first, last = global_out.view(batch, heads, 2, block, -1).unbind(2)
        out = torch.cat([first[:, :, None], middle_out, last[:, :, None]], dim=2)  # (B, H, blocks, b, d)
        return out.reshape(batch, heads, padded, -1)[:, :, :n]

    def macs(self, seq_len: int) -> int:
        block, blocks, r, dense = self.geometry(seq_len)
        keys = seq_len * seq_len if dense else self.blocked_keys(block, blocks, r)
        return self.num_heads * keys * (2 * self.head_dim + 1)  # a score, a softmax element, a weighted value
