"""Trains a tiny encoder for a few steps with harness.distributed; run alone or under torchrun.

Used by tests/test_ddp.py: `python ddp_probe.py OUT.json` (one process) and
`torchrun --nproc_per_node=2 ddp_probe.py OUT.json` must log the same global losses, since both
take the same global batches and DDP averages the two half-batch gradients.
Arguments: OUT.json [GLOBAL_BATCH]; rank 0 writes {"world_size", "losses"}.
"""

import json
import sys

import torch
import torch.nn.functional as F

from harness import distributed
from harness.model import EncoderClassifier, ModelConfig

STEPS = 4
SEQ_LEN = 16


def main(out: str, global_batch: int) -> None:
    info = distributed.init_from_env("cpu")
    distributed.shard_batch_size(global_batch, info.world_size)  # refuse before any step
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, num_classes=3, max_seq_len=SEQ_LEN, emb_dim=32, qkv_dim=32,
                         mlp_dim=64, num_layers=2, num_heads=2, dropout=0.0, pad_id=0)
    model = distributed.wrap_model(EncoderClassifier(config), info)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    data = torch.Generator().manual_seed(1)
    inputs = torch.randint(1, 20, (64, SEQ_LEN), generator=data)
    inputs[:, SEQ_LEN - 3:] = 0  # some padding, so masks take part
    targets = torch.randint(0, 3, (64,), generator=data)
    sampler = torch.Generator().manual_seed(2)  # the same global batches on every rank
    losses = []
    for _ in range(STEPS):
        indices = torch.randperm(64, generator=sampler)[:global_batch]
        mine = indices[distributed.local_slice(global_batch, info)]
        loss = F.cross_entropy(model(inputs[mine]), targets[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(distributed.mean_over_ranks(loss.item(), info))
    if distributed.is_primary():
        with open(out, "w") as handle:
            json.dump({"world_size": info.world_size, "losses": losses}, handle)
    distributed.shutdown(info)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
