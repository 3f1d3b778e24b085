"""Every task, declared in one place. Bump a task's `version` whenever its data could change
(data, tokenisation, splits, shapes); cached arrays and generated files are keyed by it. Default
configs are not versioned here: they are part of every run's config and config hash.

The `lra` family is the official code's configs (google-research/long-range-arena, the per-task
`configs/*/base_*_config.py` and `transformer_base.py`): layers, heads, widths, dropout and
attention dropout, positions, batch, optimiser, schedule, steps and `eval_frequency` (our
`eval_every`, which decides which best-validation state is tested). tests/test_tasks_registry.py
holds the official values as a table; docs/evaluation_protocol.md lists what still differs.

Evaluation rules the harness applies to all of them (docs/evaluation_protocol.md): the checkpoint with the best
validation accuracy is evaluated on test; splits are seeded; same budget and model size across
methods; a run that cannot fit or learn is reported as failed, never averaged in as 0.
"""

from __future__ import annotations

from typing import Any, Optional

from lra.configs import families, lra_model, lra_train, uniform_model, uniform_train
from lra.image import Cifar10Loader
from lra.listops import VOCAB as LISTOPS_VOCAB
from lra.listops import ListOpsLoader
from lra.mqar import MqarLoader
from lra.mqar import vocab_size as mqar_vocab
from lra.nlp import GlueLoader, ImdbSubwordLoader
from lra.pathfinder import PathfinderLoader
from lra.retrieval import AanLoader
from lra.task import TASKS, Loader, Task
from lra.text import BYTE_VOCAB, ImdbBytesLoader


def declare(
    name: str, *, version: int, description: str, source: str, tokenisation: str, seq_len: int,
    vocab_size: int, num_classes: int, head: str, pad_id: Optional[int], loader: Loader,
    params: dict[str, Any], lra: tuple[dict, dict], uniform: tuple[dict, dict],
) -> Task:
    data_fields = {
        "vocab_size": vocab_size, "num_classes": num_classes, "max_seq_len": seq_len,
        "head": head, "pad_id": pad_id,
    }
    model_configs, train_configs = families(data_fields, lra, uniform)
    task = Task(
        name=name, version=version, description=description, source=source, tokenisation=tokenisation,
        seq_len=seq_len, vocab_size=vocab_size, num_classes=num_classes, head=head, pad_id=pad_id,
        loader=loader, params=params, model_configs=model_configs, train_configs=train_configs,
    )
    TASKS.add(name, task)
    return task


# ------------------------------------------------------------------ ListOps
LISTOPS_TOKENS = "whitespace tokens after ']'->'X' and dropping '(' ')'; 0 pad, digits, MIN/MAX/MED/SM, X"
LISTOPS_LRA = (
    lra_model(num_layers=4, num_heads=8, emb_dim=512, qkv_dim=512, mlp_dim=1024, pooling="cls"),
    lra_train(batch_size=32, lr=0.05, weight_decay=0.1, schedule="rsqrt", warmup_steps=1000, steps=5000, eval_every=50),
)


def _listops_params(*, num_examples: int, held_out: float, min_length: int, max_length: int, max_depth: int = 10,
                    max_args: int = 10) -> dict[str, Any]:
    """Generator settings; `held_out` is the fraction for validation and again for test."""
    return {
        "num_examples": num_examples, "val_fraction": held_out, "test_fraction": held_out,
        "min_length": min_length, "max_length": max_length, "max_depth": max_depth, "max_args": max_args, "seed": 0,
    }


declare(
    "listops", version=1,
    description="ListOps, official LRA setting: 96k/2k/2k trees of 500-2000 tokens (release files if present, else generated)",
    source="lra_release/listops-1000/basic_{train,val,test}.tsv, or the faithful generator",
    tokenisation=LISTOPS_TOKENS, seq_len=2000, vocab_size=len(LISTOPS_VOCAB), num_classes=10,
    head="sequence", pad_id=0, loader=ListOpsLoader(official_dir="lra_release/listops-1000"),
    params=_listops_params(num_examples=100_000, held_out=0.02, min_length=500, max_length=2000),
    lra=LISTOPS_LRA, uniform=(uniform_model(), uniform_train(steps=5000)),
)
declare(
    "listops-short", version=1,
    description="ListOps generated with 500-1000 tokens (not the official task): CPU-sized",
    source="faithful generator, 10k trees, 80/10/10",
    tokenisation=LISTOPS_TOKENS, seq_len=1000, vocab_size=len(LISTOPS_VOCAB), num_classes=10,
    head="sequence", pad_id=0, loader=ListOpsLoader(),
    params=_listops_params(num_examples=10_000, held_out=0.1, min_length=500, max_length=1000),
    lra=LISTOPS_LRA, uniform=(uniform_model(), uniform_train(steps=5000)),
)
declare(
    "listops-tiny", version=1,
    description="ListOps generated with 100-256 tokens (not the official task): quick suites",
    source="faithful generator, 10k trees, 80/10/10",
    tokenisation=LISTOPS_TOKENS, seq_len=256, vocab_size=len(LISTOPS_VOCAB), num_classes=10,
    head="sequence", pad_id=0, loader=ListOpsLoader(),
    params=_listops_params(num_examples=10_000, held_out=0.1, min_length=100, max_length=256),
    lra=LISTOPS_LRA, uniform=(uniform_model(), uniform_train(steps=3000)),
)

# Calibrated variants (results/calibration/README.md): the official generator with other limits.
declare(
    "listops-shallow", version=1,
    description="ListOps of depth <= 3 (2-10 arguments), 33-127 tokens at n=128 (not the official task): "
                "a small model learns it within minutes (quick suite)",
    source="faithful generator with max_depth=3, 10k trees, 80/10/10",
    tokenisation=LISTOPS_TOKENS, seq_len=128, vocab_size=len(LISTOPS_VOCAB), num_classes=10,
    head="sequence", pad_id=0, loader=ListOpsLoader(),
    params=_listops_params(num_examples=10_000, held_out=0.1, min_length=32, max_length=128, max_depth=3),
    lra=LISTOPS_LRA, uniform=(uniform_model(), uniform_train(steps=3000)),
)
declare(
    "listops-1k", version=1,
    description="ListOps of depth <= 3 with 2-64 arguments, 513-1023 tokens at n=1024 (not the official task): "
                "the long suite's ListOps; the root operator at position 0 decides much of the answer (MAX of "
                "many values is mostly 9, MIN mostly 0), so attending to it across the sequence is the first thing learned",
    source="faithful generator with max_depth=3, max_args=64, 6k trees, 80/10/10",
    tokenisation=LISTOPS_TOKENS, seq_len=1024, vocab_size=len(LISTOPS_VOCAB), num_classes=10,
    head="sequence", pad_id=0, loader=ListOpsLoader(),
    params=_listops_params(num_examples=6000, held_out=0.1, min_length=512, max_length=1024, max_depth=3,
                           max_args=64),
    lra=LISTOPS_LRA, uniform=(uniform_model(), uniform_train(steps=5000)),
)

# ------------------------------------------------------------------ Text (IMDb bytes)
TEXT_LRA = (
    lra_model(num_layers=4, num_heads=4, emb_dim=256, qkv_dim=256, mlp_dim=1024, pooling="cls"),
    lra_train(batch_size=32, lr=0.05, weight_decay=0.1, schedule="rsqrt", warmup_steps=8000, steps=20000,
              eval_every=100),
)
for _name, _length in (("text", 1000), ("text-4k", 4000)):
    declare(
        _name, version=2,  # 2: aclImdb/ texts whitespace-stripped as TFDS does
        description=f"IMDb sentiment, byte level, {_length} bytes (LRA Text{'' if _length == 1000 else ', paper length'})",
        source="TFDS imdb_reviews (array_record) under <data_dir>/tensorflow_datasets, or <data_dir>/aclImdb",
        tokenisation="UTF-8 bytes, id = byte + 1, 0 = pad", seq_len=_length, vocab_size=BYTE_VOCAB,
        num_classes=2, head="sequence", pad_id=0, loader=ImdbBytesLoader(),
        params={"validation": "test", "seed": 0},
        lra=TEXT_LRA, uniform=(uniform_model(), uniform_train(steps=20000)),
    )

# ------------------------------------------------------------------ Retrieval (AAN)
declare(
    "retrieval", version=1,
    description="AAN citation matching, byte level, 4000 bytes per document, dual encoder",
    source="lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv (headless: label, id1, id2, text1, text2)",
    tokenisation="UTF-8 bytes (first 10,000), id = byte + 1, 0 = pad, cut to 4000", seq_len=4000,
    vocab_size=BYTE_VOCAB, num_classes=2, head="dual", pad_id=0, loader=AanLoader(), params={},
    lra=(lra_model(num_layers=4, num_heads=4, emb_dim=128, qkv_dim=128, mlp_dim=512, pooling="cls"),
         lra_train(batch_size=32, lr=0.05, weight_decay=0.1, schedule="rsqrt", warmup_steps=8000, steps=5000,
                   eval_every=100)),
    uniform=(uniform_model(), uniform_train(steps=5000)),
)

# ------------------------------------------------------------------ Image (CIFAR-10)
declare(
    "image", version=1,
    description="CIFAR-10 grayscale as 1024 pixel tokens",
    source="TFDS cifar10 (array_record): train[:90%] / train[90%:] / test",
    tokenisation="grayscale uint8 pixel values 0-255, row-major", seq_len=1024, vocab_size=256,
    num_classes=10, head="sequence", pad_id=None, loader=Cifar10Loader(), params={},
    lra=(lra_model(num_layers=1, num_heads=8, emb_dim=128, qkv_dim=64, mlp_dim=128, pooling="cls", positions="learned",
                   dropout=0.3, attention_dropout=0.2),
         lra_train(batch_size=256, lr=5e-4, weight_decay=0.0, schedule="cosine", warmup_steps=175, steps=35000,
                   eval_every=175)),
    uniform=(uniform_model(), uniform_train(steps=35000)),
)

# ------------------------------------------------------------------ Pathfinder / Path-X
PATHFINDER_LRA = (
    lra_model(num_layers=4, num_heads=4, emb_dim=32, qkv_dim=16, mlp_dim=32, pooling="mean", dropout=0.2),
    lra_train(batch_size=512, lr=1e-3, weight_decay=0.0, schedule="cosine", warmup_steps=312, steps=62400,
              eval_every=312),
)
for _difficulty, _suffix in (("hard", ""), ("intermediate", "-intermediate"), ("easy", "-easy")):
    _contour = {"easy": 6, "intermediate": 9, "hard": 14}[_difficulty]
    declare(
        f"pathfinder{_suffix}", version=2,  # 2: lockstep pair search (new random stream)
        description=f"Pathfinder 32x32, {_difficulty} (contour length {_contour}){' = LRA Pathfinder' if not _suffix else ''}",
        source="lra_release/pathfinder32/ (if present) or the snakes2 port, seeded 80/10/10 split",
        tokenisation="grayscale pixel values 0-255, row-major", seq_len=1024, vocab_size=256,
        num_classes=2, head="sequence", pad_id=None, loader=PathfinderLoader(32, _difficulty),
        params={"num_examples": 200_000, "seed": 0},
        lra=PATHFINDER_LRA, uniform=(uniform_model(), uniform_train(steps=62400)),
    )
declare(
    "pathx", version=2,  # 2: lockstep pair search (new random stream)
    description="Path-X: Pathfinder 128x128, hard (contour length 14)",
    source="lra_release/pathfinder128/curv_contour_length_14 (if present) or the snakes2 port, seeded 80/10/10",
    tokenisation="grayscale pixel values 0-255, row-major", seq_len=16384, vocab_size=256, num_classes=2,
    head="sequence", pad_id=None, loader=PathfinderLoader(128, "hard"),
    params={"num_examples": 200_000, "seed": 0},
    lra=(lra_model(num_layers=1, num_heads=2, emb_dim=32, qkv_dim=16, mlp_dim=32, pooling="mean", positions="learned"),
         lra_train(batch_size=64, lr=1e-3, weight_decay=0.0, schedule="cosine", warmup_steps=2500, steps=500_000,
                   eval_every=2500, grad_clip=1.0)),
    uniform=(uniform_model(), uniform_train(steps=500_000)),
)

# ------------------------------------------------------------------ MQAR (Zoology)
_MQAR_MODEL = {
    "num_layers": 2, "num_heads": 2, "emb_dim": 64, "qkv_dim": 64, "mlp_dim": 128,
    "pooling": "mean", "positions": "sinusoidal", "dropout": 0.0,
}
_MQAR_TRAIN = {
    "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1, "schedule": "cosine", "warmup_steps": 100,
    "steps": 2000, "grad_clip": 1.0, "eval_every": 200,
}


def _declare_mqar(name: str, description: str, *, layout: str, num_keys: int, num_values: int, num_pairs: int,
                  seq_len: int, num_examples: int) -> None:
    params = {"layout": layout, "num_keys": num_keys, "num_values": num_values, "num_pairs": num_pairs,
              "seq_len": seq_len, "num_examples": num_examples, "seed": 0}
    declare(
        name, version=1, description=description,
        source="generated (Zoology MQAR, adapted to a bidirectional encoder)",
        tokenisation="single: joint (key, value) ids and query-key ids" if layout == "single"
        else "classic: key ids and value ids on adjacent positions, queried keys",
        seq_len=seq_len, vocab_size=mqar_vocab(params), num_classes=num_values,
        head="token", pad_id=0, loader=MqarLoader(), params=params,
        lra=(_MQAR_MODEL, _MQAR_TRAIN), uniform=(uniform_model(), uniform_train(steps=2000, batch_size=64)),
    )


for _name, _layout in (("mqar", "single"), ("mqar-classic", "classic")):
    _declare_mqar(_name, f"Multi-query associative recall, {_layout} layout: 48 key-value pairs at n=256, every key queried",
                  layout=_layout, num_keys=64, num_values=64, num_pairs=48, seq_len=256, num_examples=20_000)
# The calibrated recall tasks (results/calibration/README.md): few and many key identities side
# by side (as Zoology varies the vocabulary), so that a method cannot win by giving each of a few
# keys its own leaf or feature. Same layout, values, pairs and length; only the key count differs.
_declare_mqar("mqar-few-keys", "MQAR, classic layout, 8 keys x 8 values, 8 pairs at n=128 (quick suite): few key identities",
              layout="classic", num_keys=8, num_values=8, num_pairs=8, seq_len=128, num_examples=8000)
_declare_mqar("mqar-many-keys", "MQAR, classic layout, 64 keys x 8 values, 8 pairs at n=128 (quick suite): many key "
              "identities, more than a height-5 tree has leaves",
              layout="classic", num_keys=64, num_values=8, num_pairs=8, seq_len=128, num_examples=8000)
# Long-range recall (long suite): the single layout with 4 keys and 4 values is the setting full
# attention learned at n=1024 within a few hundred CPU steps; more keys stayed at chance there.
_declare_mqar("mqar-4k", "MQAR, single layout, 4 keys x 4 values, 4 pairs at n=4096 (long suite): recall at long range",
              layout="single", num_keys=4, num_values=4, num_pairs=4, seq_len=4096, num_examples=4000)

# ------------------------------------------------------------------ GLUE and IMDb subword
_SUBWORD = "sentencepiece unigram trained on the training split, cached; 0 pad, 1 unk, 2 <sep>"
_NLP_LRA = TEXT_LRA
declare(
    "sst2", version=1, description="GLUE SST-2 sentence sentiment",
    source="TFDS glue/sst2 (array_record); GLUE validation = our test, seeded 5% of train = val",
    tokenisation=_SUBWORD, seq_len=128, vocab_size=8000, num_classes=2, head="sequence", pad_id=0,
    loader=GlueLoader("glue/sst2", ("sentence",), "validation"),
    params={"vocab_size": 8000, "val_fraction": 0.05, "seed": 0},
    lra=_NLP_LRA, uniform=(uniform_model(), uniform_train(steps=10000)),
)
declare(
    "mnli", version=1, description="GLUE MNLI entailment, pairs concatenated as premise <sep> hypothesis",
    source="TFDS glue/mnli (array_record); validation_matched = our test, seeded 2% of train = val",
    tokenisation=_SUBWORD, seq_len=256, vocab_size=8000, num_classes=3, head="sequence", pad_id=0,
    loader=GlueLoader("glue/mnli", ("premise", "hypothesis"), "validation_matched"),
    params={"vocab_size": 8000, "val_fraction": 0.02, "seed": 0},
    lra=_NLP_LRA, uniform=(uniform_model(), uniform_train(steps=20000)),
)
declare(
    "imdb-subword", version=2,  # 2: aclImdb/ texts whitespace-stripped as TFDS does
    description="IMDb sentiment, long documents, subword tokens (1024)",
    source="TFDS imdb_reviews (array_record) or <data_dir>/aclImdb",
    tokenisation=_SUBWORD, seq_len=1024, vocab_size=8000, num_classes=2, head="sequence", pad_id=0,
    loader=ImdbSubwordLoader(), params={"vocab_size": 8000, "validation": "test", "seed": 0},
    lra=_NLP_LRA, uniform=(uniform_model(), uniform_train(steps=20000)),
)
