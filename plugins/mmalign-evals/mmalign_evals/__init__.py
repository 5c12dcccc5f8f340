"""mmalign plugin: the paper's benchmarks as evaluators, reproducibly.

Evaluators: ``pope``, ``object-halbench``, ``mmhal-bench``, ``mmhal-bench-v``,
``llava-bench-wild``, ``mm-vet`` and ``vqa`` (TextVQA, GQA). Judge:
``scripted-judge`` (a deterministic test double). Every evaluator reads its
benchmark from local files in the layout it is distributed in, pins prompt,
decoding and sample list, and records them in ``EvalResult.details``; judge
replies are cached on disk (:mod:`mmalign_evals.judging`). See
``docs/evaluation.md``.
"""
__version__ = "0.1.0"
