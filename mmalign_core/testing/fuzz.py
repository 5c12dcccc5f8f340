"""Spec mutants for robustness tests: every one must validate or be refused with exit 2 and a message, never a traceback."""
from __future__ import annotations

import copy
import json
import random
from typing import Any, Iterator

#: Values that have broken validators before: wrong types, huge and tiny numbers, odd strings, deep nesting.
NASTY: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, 2**64, -(10**9), 10**18, 1e308, -1e308, 1e-320, 0.5, -0.0,
    "", " ", "\ud800", "a" * 300, "../../../../etc/passwd", "/dev/null", "nul\x00byte", "sft", "dpo", "$seed",
    [], [None], ["sft"], [5, -3], [[[]]], {}, {"name": "dpo"}, {"type": "sft"}, {"": ""}, {"a" * 200: 1},
)


def _nodes(value: Any, max_depth: int = 12) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every node and its path, breadth first, to ``max_depth`` (iterative: mutants may nest deeply)."""
    queue: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while queue:
        path, node = queue.pop(0)
        yield path, node
        if len(path) >= max_depth:
            continue
        if isinstance(node, dict):
            queue += [((*path, k), v) for k, v in node.items()]
        elif isinstance(node, list):
            queue += [((*path, i), v) for i, v in enumerate(node)]


def _deep(depth: int) -> Any:
    node: Any = 0
    for _ in range(depth):
        node = [node]
    return node


def mutate(spec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One mutant: a node replaced by a nasty value, deleted, or given an extra key; sometimes several."""
    out = copy.deepcopy(spec)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        nodes = [p for p, _ in _nodes(out) if p]
        path = rng.choice(nodes)
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rng.random()
        if action < 0.7:
            parent[key] = copy.deepcopy(rng.choice(NASTY)) if rng.random() < 0.97 else _deep(rng.choice((50, 900)))
        elif action < 0.85 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(("extra", "nmae", "confg", "\ud800"))] = rng.choice(NASTY)
    return out


def mutants(spec: dict[str, Any], n: int, seed: int = 0) -> Iterator[str]:
    """``n`` mutants of ``spec`` as JSON text (``ensure_ascii`` keeps lone surrogates as escapes, as a file would)."""
    rng = random.Random(seed)
    for _ in range(n):
        yield json.dumps(mutate(spec, rng))
