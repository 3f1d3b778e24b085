"""The encoder classifier every method is trained in: the LRA Transformer with a pluggable core.

Mirrors the official LRA encoder (docs/lra.md): pre-LN blocks, bias-free Q/K/V projections, GELU
MLP, final LayerNorm, sinusoidal or learned positions, CLS or MEAN pooling. Only the attention core
changes between methods, chosen per layer by registry name, so every method gets identical
projections and a hybrid (first layer full, the rest tree) is one config line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from torch import nn

from bench_common import BenchError
from methods import AttentionMethod, create_attention


@dataclass
class ModelConfig:
    """Shape and attention choices of the encoder; tasks supply vocab, length and classes."""

    vocab_size: int = 256
    num_classes: int = 2
    max_seq_len: int = 512
    emb_dim: int = 64
    qkv_dim: int = 64
    mlp_dim: int = 128
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    # Dropout on the attention weights (LRA's attention_dropout_rate); reaches the cores that declare
    # the capability, the others ignore it (the record's diagnostics say which).
    attention_dropout: float = 0.0
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    pooling: Literal["cls", "mean"] = "mean"
    head: Literal["sequence", "dual", "token"] = "sequence"
    pad_id: Optional[int] = 0  # token id that marks padding; None when every id is real (pixels)
    attention: str = "full"
    attention_options: dict[str, Any] = field(default_factory=dict)
    # Per-layer overrides, e.g. {0: {"name": "full"}} keeps layer 0 dense in a tree model.
    layer_attention: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Kernel size of a depthwise convolution over the sequence before each attention layer (0 = none).
    # Recall needs a query to find the position holding its key *and* read the value beside it; a
    # short convolution puts the key's neighbours into one state so attention needs one hop, not
    # two (the recipe Zoology and Based put in front of every sequence mixer). Off in the `lra` family.
    short_conv: int = 0

    def __post_init__(self) -> None:
        if self.qkv_dim % self.num_heads:
            raise BenchError(
                f"model.num_heads={self.num_heads} must divide model.qkv_dim={self.qkv_dim}"
            )
        if self.short_conv < 0 or (self.short_conv and self.short_conv % 2 == 0):
            raise BenchError(f"model.short_conv must be 0 (off) or an odd kernel size, got {self.short_conv}")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise BenchError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        self.layer_attention = {int(k): dict(v) for k, v in self.layer_attention.items()}
        for index, spec in self.layer_attention.items():
            if not 0 <= index < self.num_layers:
                raise BenchError(
                    f"model.layer_attention: layer {index} out of range 0..{self.num_layers - 1}"
                )
            unknown = set(spec) - {"name", "options"}
            if unknown:
                raise BenchError(
                    f"model.layer_attention[{index}]: unknown key '{sorted(unknown)[0]}'; accepted: name, options"
                )

    @property
    def head_dim(self) -> int:
        return self.qkv_dim // self.num_heads

    @property
    def encoded_length(self) -> int:
        """Sequence length the attention cores see (input plus the CLS token when pooling=cls)."""
        return self.max_seq_len + (1 if self.uses_cls else 0)

    @property
    def uses_cls(self) -> bool:
        return self.pooling == "cls" and self.head != "token"

    def layer_spec(self, index: int) -> tuple[str, dict[str, Any]]:
        spec = self.layer_attention.get(index, {})
        return spec.get("name", self.attention), dict(spec.get("options", self.attention_options))


class AttentionLayer(nn.Module):
    """Q/K/V projections (no bias, as LRA), a pluggable core, and the output projection."""

    def __init__(self, config: ModelConfig, core: AttentionMethod):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.emb_dim, 3 * config.qkv_dim, bias=False)
        self.out = nn.Linear(config.qkv_dim, config.emb_dim)
        self.core = core
        self.checked_core = 0  # id() of the core whose output was checked (once per core: cheap)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        batch, n, _ = x.shape
        qkv = self.qkv(x).view(batch, n, 3, self.num_heads, -1)  # (B, n, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, n, d)
        core = self.core
        if torch.compiler.is_compiling() and type(core).capabilities.data_dependent_shapes:
            core = torch.compiler.disable(core.__call__)  # runs eagerly: a graph break, not a recompile per step
        attended = core(q, k, v, key_padding_mask=key_padding_mask)  # (B, H, n, d)
        if self.checked_core != id(self.core):
            check_core_output(self.core, attended, v)
            self.checked_core = id(self.core)
        return self.out(attended.transpose(1, 2).reshape(batch, n, -1))


def check_core_output(core: AttentionMethod, output: Any, v: torch.Tensor) -> None:
    """A plugin core's first output must be a finite tensor shaped and typed like `v`, (B, H, n, d):
    a transposed or wrongly sized result would otherwise train silently or fail in a reshape."""
    name = type(core).registry_name or type(core).__name__
    expected = tuple(v.shape)
    if not torch.is_tensor(output):
        raise BenchError(f"attention method '{name}' returned a {type(output).__name__}, expected a tensor of "
                         f"shape {expected} (batch, heads, length, head_dim)")
    if tuple(output.shape) != expected:
        raise BenchError(f"attention method '{name}' returned shape {tuple(output.shape)}, expected {expected} "
                         f"(batch, heads, length, head_dim)")
    autocast = torch.is_autocast_enabled(output.device.type)
    if not output.is_floating_point() or (output.dtype != v.dtype and not autocast):
        raise BenchError(f"attention method '{name}' returned dtype {output.dtype}, expected {v.dtype} (that of v)")
    if not bool(torch.isfinite(output).all()):
        raise BenchError(f"attention method '{name}' returned non-finite values on its first batch, "
                         f"shape {expected}")


class ShortConvolution(nn.Module):
    """x + depthwise convolution of x along the sequence, centred (the encoder is bidirectional).

    Residual, so a token keeps its own state at initialisation and the convolution only adds its
    neighbours' (without the residual, one calibration seed of 8-key recall was still at 50% after
    200 steps; with it, 100% by step 100: results/calibration/). Padded positions are zeroed first,
    so a real token's state does not depend on how much padding follows it.
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if key_padding_mask is not None:
            x = x.masked_fill(~key_padding_mask[..., None], 0.0)
        return x + self.conv(x.transpose(1, 2)).transpose(1, 2)


class EncoderBlock(nn.Module):
    """Pre-LN: x + Attn(Conv(LN(x))) (Conv only with model.short_conv), then x + MLP(LN(x))."""

    def __init__(self, config: ModelConfig, core: AttentionMethod):
        super().__init__()
        self.norm_attention = nn.LayerNorm(config.emb_dim)
        self.short_conv = ShortConvolution(config.emb_dim, config.short_conv) if config.short_conv else None
        self.attention = AttentionLayer(config, core)
        self.norm_mlp = nn.LayerNorm(config.emb_dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.emb_dim, config.mlp_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_dim, config.emb_dim),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        mixed = self.norm_attention(x)
        if self.short_conv is not None:
            mixed = self.short_conv(mixed, key_padding_mask)
        x = x + self.dropout(self.attention(mixed, key_padding_mask))
        return x + self.dropout(self.mlp(self.norm_mlp(x)))


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sin/cos position table (Vaswani et al. 2017, sec. 3.5)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class Encoder(nn.Module):
    """Embeds tokens, runs the blocks, returns per-token states and the padding mask."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # One extra id for the CLS token, so it never collides with a task's vocabulary.
        self.embed = nn.Embedding(config.vocab_size + 1, config.emb_dim)
        if config.positions == "learned":
            self.positions = nn.Parameter(torch.randn(config.encoded_length, config.emb_dim) * 0.02)
        else:
            self.register_buffer(
                "positions", sinusoidal_positions(config.encoded_length, config.emb_dim), persistent=False
            )
        self.blocks = nn.ModuleList(
            EncoderBlock(config, build_core(config, i)) for i in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.emb_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        config = self.config
        if tokens.shape[1] > config.max_seq_len:
            raise BenchError(
                f"input length {tokens.shape[1]} exceeds model.max_seq_len={config.max_seq_len}"
            )
        mask = None if config.pad_id is None else tokens != config.pad_id  # (B, n) True = real
        if config.uses_cls:
            cls = torch.full_like(tokens[:, :1], config.vocab_size)
            tokens = torch.cat([cls, tokens], dim=1)
            if mask is not None:
                mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        if mask is not None and bool(mask.all()):
            mask = None  # nothing padded: let cores take their unmasked fast path
        x = self.dropout(self.embed(tokens) + self.positions[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask


class EncoderClassifier(nn.Module):
    """Encoder plus one of three heads: sequence, dual (Retrieval) or per-token classification.

    Inputs are token ids (B, n); for the dual head (B, 2, n), one document per row, encoded by the
    shared encoder and matched on [u, v, u*v, u-v]. Outputs are logits (B, classes), or
    (B, n, classes) for the token head.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        pooled_dim = config.emb_dim * (4 if config.head == "dual" else 1)
        self.classifier = nn.Sequential(
            nn.Linear(pooled_dim, config.mlp_dim), nn.ReLU(), nn.Linear(config.mlp_dim, config.num_classes)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        head = self.config.head
        if head == "dual":
            if tokens.dim() != 3 or tokens.shape[1] != 2:
                raise BenchError(f"dual head expects inputs (batch, 2, n), got {tuple(tokens.shape)}")
            u, v = self.pool(tokens[:, 0]), self.pool(tokens[:, 1])
            return self.classifier(torch.cat([u, v, u * v, u - v], dim=-1))
        if head == "token":
            states, _ = self.encoder(tokens)
            return self.classifier(states)  # (B, n, classes)
        return self.classifier(self.pool(tokens))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        states, mask = self.encoder(tokens)  # (B, n, D)
        if self.config.uses_cls:
            return states[:, 0]
        if mask is None:
            return states.mean(dim=1)
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def attention_cores(self) -> list[AttentionMethod]:
        return [block.attention.core for block in self.encoder.blocks]

    def set_attention(self, layers: list[int], name: str, options: Optional[dict[str, Any]] = None) -> None:
        """Swaps the cores of `layers` for `name`, keeping projections and all other weights.

        State the old and new core share (same parameter name and shape, e.g. a Treeformer tree
        moving from TC to TF) is carried over, so a stage switch does not reset learned routing:
        buffers by value, parameters as the same objects (`share_parameters`), so the optimizer
        keeps their state.
        """
        config = self.config
        for index in layers:
            attention = self.encoder.blocks[index].attention
            old = attention.core
            new = create_attention(
                name,
                num_heads=config.num_heads,
                head_dim=config.head_dim,
                max_seq_len=config.encoded_length,
                attention_dropout=config.attention_dropout,
                **(options or {}),
            )
            carried = {
                key: value
                for key, value in old.state_dict().items()
                if key in new.state_dict() and new.state_dict()[key].shape == value.shape
            }
            new.load_state_dict(carried, strict=False)
            share_parameters(old, new)
            device = next(attention.qkv.parameters()).device
            attention.core = new.to(device).train(old.training)


def share_parameters(source: nn.Module, target: nn.Module) -> list[str]:
    """Puts `source`'s Parameter objects into `target` wherever name and shape match; returns the names.

    A copy would be a new Parameter: the optimizer would see it as new (fresh AdamW moments) and keep
    the old one as an orphan.
    """
    existing = dict(source.named_parameters())
    shared = []
    for name, param in list(target.named_parameters()):
        match = existing.get(name)
        if match is not None and match is not param and match.shape == param.shape:
            owner, _, attribute = name.rpartition(".")
            target.get_submodule(owner).register_parameter(attribute, match)
            shared.append(name)
    return shared


def build_core(config: ModelConfig, layer: int) -> AttentionMethod:
    name, options = config.layer_spec(layer)
    return create_attention(
        name,
        num_heads=config.num_heads,
        head_dim=config.head_dim,
        max_seq_len=config.encoded_length,
        attention_dropout=config.attention_dropout,
        **options,
    )
