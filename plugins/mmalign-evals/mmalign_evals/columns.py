"""The paper's Table 2 layout for ``mmalign compare --columns paper`` (also ``--paper``).

Each column reads one evaluator's metric and scales it to the paper's units
(POPE F1, TextVQA, GQA and Object HalBench recall as percentages).
"""
from __future__ import annotations

from mmalign_core.commands import ColumnSet, CompareColumn

PAPER = ColumnSet(
    name="paper",
    summary="Table 2 of arXiv 2407.02477: POPE | MMHAL | MMHAL_V | LLaVA_W | VQA_T | GQA | MMVet | Rec",
    columns=(
        CompareColumn("POPE", "pope", "pope_f1", 100.0),
        CompareColumn("MMHAL", "mmhal-bench", "mmhal_score"),
        CompareColumn("MMHAL_V", "mmhal-bench-v", "mmhal_v_score"),
        CompareColumn("LLaVA_W", "llava-bench-wild", "llava_w"),
        CompareColumn("VQA_T", "textvqa", "vqa_accuracy", 100.0),
        CompareColumn("GQA", "gqa", "vqa_accuracy", 100.0),
        CompareColumn("MMVet", "mm-vet", "mmvet"),
        CompareColumn("Rec", "object-halbench", "recall", 100.0),
    ),
)
