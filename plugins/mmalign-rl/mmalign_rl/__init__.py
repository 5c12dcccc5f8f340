"""mmalign plugin: reinforcement learning against rewards -- reward components, PPO, RLOO and GRPO over one shared loop."""
from __future__ import annotations

__all__: list[str] = []
