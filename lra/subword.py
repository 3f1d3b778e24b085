"""Subword tokenisation (sentencepiece unigram) trained on a task's training text and cached.

The model file is keyed by the task version and the training parameters and written atomically,
so a second preparation reuses it. Ids: 0 pad, 1 unknown, 2 the pair separator `<sep>`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from bench_common import BenchError

PAD, UNK, SEP = 0, 1, 2


def train_or_load(path: Path, texts: Iterable[bytes], vocab_size: int):
    """A SentencePieceProcessor from `path`, training it on `texts` first if it does not exist."""
    try:
        import sentencepiece as spm
    except ImportError:
        raise BenchError("subword tasks need sentencepiece: pip install 'treeformer-bench[tfds]'") from None
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as staging:
            prefix = os.path.join(staging, "spm")
            spm.SentencePieceTrainer.train(
                sentence_iterator=(t.decode("utf-8", errors="replace") for t in texts),
                model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
                pad_id=PAD, unk_id=UNK, bos_id=-1, eos_id=-1, user_defined_symbols=["<sep>"],
                hard_vocab_limit=False, input_sentence_size=0, max_sentence_length=1 << 16,
                num_threads=1, minloglevel=2,
            )
            os.replace(prefix + ".model", path)
    return spm.SentencePieceProcessor(model_file=str(path))


def encode(processor, texts: list[bytes], seq_len: int, seconds: Optional[list[bytes]] = None) -> np.ndarray:
    """(N, seq_len) ids, zero-padded; pairs become `a <sep> b`, each side cut to fit (a keeps half)."""
    first = processor.encode([t.decode("utf-8", errors="replace") for t in texts])
    second = processor.encode([t.decode("utf-8", errors="replace") for t in seconds]) if seconds is not None else None
    out = np.zeros((len(first), seq_len), dtype=np.int32)
    for i, ids in enumerate(first):
        if second is not None:
            other = second[i]
            keep = max(seq_len - 1 - len(other), seq_len // 2)
            ids = ids[:keep] + [SEP] + other
        ids = ids[:seq_len]
        out[i, :len(ids)] = ids
    return out
