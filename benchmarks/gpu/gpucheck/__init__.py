"""The GPU check suite behind ``benchmarks/gpu/run.sh``: one part per module, each run in its own process.

Parts: ``environment`` (versions, device), ``correctness`` (the CUDA paths of every family's tiny
checkpoint against their plain computations), ``dpo`` (a LLaVA-1.5-7B-shaped model: mmalign against TRL's
``DPOTrainer``), ``sampling`` (the lean decoder against ``generate`` on that model) and ``fsdp``
(``accelerate launch`` with the shipped FSDP config, a crash after a checkpoint and a resume).
"""
