"""The interfaces between the runner and the components plugins provide.

These are structural (``typing.Protocol``): a component need not inherit from
anything, it only has to offer these methods. Tensor types are only named in
annotations, so this module imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

from .types import EvalResult, GenerationRequest, PreferencePair, SFTExample

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _plain_progress(iterable: Iterable[Any], desc: str = "", total: int | None = None) -> Iterable[Any]:
    return iterable


@dataclass
class Context:
    """What the runner hands to sources, evaluators and judges.

    Attributes:
        seed: the run's seed; components derive their own RNGs from it.
        output_dir: a directory this component may write to (created by the runner).
        cache_dir: a directory shared across runs for reusable artefacts.
        progress: wraps a long iterable in a progress bar: ``progress(it, desc=..., total=...)``.
        log: prints a line to the run's console and log file.
        extras: run-provided objects; ``extras["model"]`` is the stage-start model for sources whose
            entry ``requires`` ``"generate"``.
    """

    seed: int = 0
    output_dir: Path = field(default_factory=lambda: Path("."))
    cache_dir: Path = field(default_factory=lambda: Path(".mmalign-cache"))
    progress: Callable[..., Iterable[Any]] = _plain_progress
    log: Callable[[str], None] = print
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairLogps:
    """Summed response-token log-probs for a batch of pairs (tensors of shape [B]).

    ``*_tokens`` are the number of response tokens per sequence, so a loss can
    turn sums into means. ``extra_rejected`` holds one tensor per additional
    rejected answer (``PreferencePair.extra_rejected``).
    """

    chosen: "torch.Tensor"
    rejected: Optional["torch.Tensor"]
    chosen_tokens: "torch.Tensor"
    rejected_tokens: Optional["torch.Tensor"]
    extra_rejected: list["torch.Tensor"] = field(default_factory=list)
    extra_rejected_tokens: list["torch.Tensor"] = field(default_factory=list)
    #: Per-token log-probs ``[B, T]`` (answer token ``t`` of row ``i`` at ``[i, t]``, zero past
    #: ``chosen_tokens[i]``); filled when the loss's entry ``requires`` ``"token_logps"``, else None.
    chosen_token_logps: Optional["torch.Tensor"] = None
    rejected_token_logps: Optional["torch.Tensor"] = None


@dataclass
class LossInputs:
    """Everything a loss may read for one micro-batch.

    ``corrupted`` and ``corrupted_reference`` are the policy's and the reference's log-probs of the
    same answers under the loss's second image condition (:class:`CorruptedImageLoss`); they are
    filled only when the loss's entry ``requires`` ``"corrupted_image"``.
    """

    policy: PairLogps
    reference: Optional[PairLogps]
    pairs: Sequence[PreferencePair] | Sequence[SFTExample]
    corrupted: Optional[PairLogps] = None
    corrupted_reference: Optional[PairLogps] = None


@dataclass
class LossOutput:
    """A scalar loss with gradients and the metrics to log for this micro-batch."""

    loss: "torch.Tensor"
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class GenerativeModel(Protocol):
    """What evaluators, judges and samplers need from a model: generation and scoring."""

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 16,
    ) -> list[str]:
        """Continue each request; never emits the image token."""

    def continuation_logprobs(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        """Summed log-prob of each continuation given its request (no gradients)."""


@runtime_checkable
class AlignableModel(GenerativeModel, Protocol):
    """A trainable vision-language model as the runner sees it (extends :class:`GenerativeModel`)."""

    @property
    def module(self) -> "torch.nn.Module":
        """The underlying ``torch.nn.Module`` (what the optimizer updates)."""

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True) -> PairLogps:
        """Summed log-probs of chosen (and rejected) answers, with gradients."""

    def sft_logps(self, examples: Sequence[SFTExample]) -> PairLogps:
        """Summed log-probs of the responses of SFT examples (``chosen`` side), with gradients."""

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        """Optimizer parameter groups (e.g. language model vs multimodal projector)."""

    def frozen_reference(self) -> Any:
        """The reference policy of a stage: an object with ``pair_logps``/``sft_logps``
        computed with the stage-start weights (adapters disabled, or a frozen copy)."""

    def to(self, device: Any) -> Any:
        """Move the weights to ``device``; returns self."""

    def freeze_vision(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the vision tower."""

    def enable_lora(self, r: int, alpha: float, dropout: float, target_modules: str) -> None:
        """Switch to training low-rank adapters on modules matching ``target_modules``."""

    def load_checkpoint(self, path: Path) -> None:
        """Load weights written by :meth:`save_pretrained` into this model."""

    def save_pretrained(self, path: Path) -> None:
        """Write a folder loadable with plain transformers (and peft, for adapters)."""

    def fingerprint(self) -> str:
        """A short hash identifying the weights and processor settings."""


@runtime_checkable
class PreferenceSource(Protocol):
    """Yields canonical examples. Static sources ignore ``model``; online ones use it."""

    def pairs(self, ctx: Context) -> Iterator[PreferencePair]:
        """Preference pairs (capability ``"pairs"``)."""

    def fingerprint(self) -> str:
        """A hash of the underlying data (files, generator settings) for the manifest."""


@runtime_checkable
class OnlineSource(PreferenceSource, Protocol):
    """A source whose pairs depend on the current policy (capability ``"online"``).

    ``pairs(ctx)`` gives the pool the runner batches (prompts, possibly with offline pairs); each step
    the runner hands this process's batch to ``prepare_batch`` with the current model, under no_grad,
    and trains on what it returns: a list of pairs, or ``(pairs, stats)`` where ``stats`` are numbers
    logged as ``online/<name>``.
    """

    def prepare_batch(self, pairs: Sequence[PreferencePair], model: AlignableModel, ctx: Context, step: int) -> Any: ...


@runtime_checkable
class Loss(Protocol):
    def __call__(self, inputs: LossInputs) -> LossOutput: ...


@runtime_checkable
class Evaluator(Protocol):
    def evaluate(self, model: GenerativeModel, ctx: Context) -> EvalResult: ...


@runtime_checkable
class Judge(Protocol):
    """A model or service that answers judging prompts (graders, pairwise annotators, reward models).

    ``complete`` is the text surface every judge offers: evaluators and preference sources build their
    own prompts (rubric, question, answers, optional image) and parse the replies. ``describe``
    returns what identifies the judge in manifests (model, version, decoding; never secrets).
    """

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        """One reply per judging request."""

    def describe(self) -> dict[str, Any]:
        """Identity of the judge for manifests and caches."""


@dataclass
class RewardOutput:
    """Rewards of a batch of responses.

    Attributes:
        scores: one scalar per response (higher is better), before any normalisation.
        components: named parts of ``scores`` (e.g. the terms of a weighted sum), one value per response
            each; logged as ``reward/<name>``.
        details: optional per-response records (what the reward was computed from), logged with the rollouts.
    """

    scores: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class Reward(Protocol):
    """A reward (component kind ``reward``): maps (prompt, images, response) batches to scalars.

    ``requests`` carry the prompt and images of each response (one request per response, in order).
    ``describe`` identifies the reward in manifests, rollout logs and caches.
    """

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        """One scalar per response."""

    def describe(self) -> dict[str, Any]:
        """Identity for manifests and caches."""


@dataclass
class RLStageInputs:
    """What the runner hands to an RL algorithm for one ``rl`` stage.

    Attributes:
        model: the policy (an :class:`AlignableModel`), as the previous stage left it.
        prompts: the stage's prompts with their images (preference pairs or SFT examples; answers unused).
        reward: the stage's :class:`Reward`.
        train: the stage's optimisation settings (``mmalign_core.spec_models.TrainSettings``).
        rollout: the stage's rollout settings (``mmalign_core.spec_models.RolloutSettings``).
        stage_name, stage_dir, metrics_path, seed: where and under which seed the stage runs;
            checkpoints go to ``stage_dir/checkpoints/step-N/`` (with ``trainer_state.pt``), metrics rows
            (``{"stage": stage_name, "step": N, ...}``) are appended to ``metrics_path``.
        ctx: a context whose ``output_dir`` is the stage's data folder (rollout logs go there).
        on_metrics: call with ``(step, row)`` after writing a metrics row (plugins observe it).
    """

    model: Any
    prompts: Sequence[Any]
    reward: Any
    train: Any
    rollout: Any
    stage_name: str
    stage_dir: Path
    metrics_path: Path
    seed: int
    ctx: Context
    progress: Callable[..., Iterable[Any]] = _plain_progress
    log: Callable[[str], None] = print
    on_metrics: Callable[[int, dict[str, float]], None] = lambda step, row: None


@runtime_checkable
class RLAlgorithm(Protocol):
    """An RL algorithm (component kind ``rl_algorithm``): trains the policy of an ``rl`` stage in place.

    ``train`` returns a dict with at least ``steps``, ``examples_seen`` (responses generated),
    ``seconds`` and ``last_metrics``; it resumes from the stage's latest checkpoint when there is one.
    """

    def train(self, stage: RLStageInputs) -> dict[str, Any]:
        """Run the stage."""

    def describe(self) -> dict[str, Any]:
        """Identity (algorithm and settings) for the manifest."""


@runtime_checkable
class SentenceEmbedder(Protocol):
    """A sentence embedder (component kind ``embedder``): texts to unit-length vectors.

    Used where texts are compared by meaning (BDHS's similarity check). ``embed`` returns a float
    array of shape ``[len(texts), D]`` whose rows have norm 1, so a row-wise dot product is the
    cosine similarity; a text's row does not depend on the other texts of the call. ``describe``
    identifies the embedder (model, pooling, truncation) in manifests and cache keys.
    """

    def embed(self, texts: Sequence[str]) -> Any:
        """One unit-length row per text (a numpy array ``[N, D]``)."""

    def describe(self) -> dict[str, Any]:
        """Identity for manifests and cache keys."""


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker learns when a run starts.

    Attributes:
        run_dir: the run's output folder (trackers write under it unless told otherwise).
        name: the run's name (``spec.name``).
        spec: the resolved spec as JSON data (what ``spec.json`` holds).
        spec_hash: sha256 of the resolved spec.
        resumed: whether this process continues an earlier run in the same folder.
    """

    run_dir: Path
    name: str
    spec: Mapping[str, Any]
    spec_hash: str
    resumed: bool = False


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker (component kind ``tracker``), listed in a spec's ``trackers``.

    The runner calls it on the main process only: ``start`` once before the first stage (a failure there
    stops the run), ``log_metrics`` after each metrics row is written to ``metrics.jsonl`` and after each
    evaluator, ``finish`` with the final manifest. ``step`` is the run's
    optimizer step (the steps of earlier training stages plus the stage's own), so every stage and every
    evaluation share one x axis. Keys are ``<stage>/<metric>`` and ``eval/<evaluator>/<metric>``.
    """

    def start(self, run: TrackedRun) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(self, manifest: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    """A component (loss, source, judge, ...) with state that must survive a resume.

    A component that has both methods gets its ``state_dict()`` saved in every
    training checkpoint of the stage it runs in, and ``load_state_dict(state)``
    called with it when the stage resumes, before the first resumed step. The
    state holds tensors, numbers, strings, lists and dicts only (checkpoints are
    read with ``torch.load(weights_only=True)``: no pickled objects).
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class CorruptedImageLoss(Protocol):
    """A loss that scores answers under a second image condition (entry ``requires`` ``"corrupted_image"``).

    Each micro-batch the runner calls ``corrupted_pairs(pairs)`` and scores the pairs it returns (the
    same answers, other images) with the policy and the reference into ``LossInputs.corrupted`` and
    ``LossInputs.corrupted_reference``: the chosen answers only, or chosen and rejected when
    ``corrupted_with_rejected`` is true. The corruption must be a pure function of the pair (seeded by
    its id), so the policy and the reference, and a resumed run, see the same images.
    """

    @property
    def corrupted_with_rejected(self) -> bool: ...

    def corrupted_pairs(self, pairs: Sequence[PreferencePair]) -> Sequence[PreferencePair]: ...


# ------------------------------------------------------------------ optional capabilities
# What a component may offer beyond its kind's protocol. The runner tests for them with ``isinstance``
# (these are runtime-checkable), so a component declares a capability by having the method -- and a
# type checker sees the signature it must have.


@runtime_checkable
class SFTSource(Protocol):
    """A source with its own SFT examples (capability ``sft``); otherwise its pairs' chosen answers are used."""

    def sft_examples(self, ctx: Context) -> Iterator[SFTExample] | Sequence[SFTExample]: ...


@runtime_checkable
class SourceStats(Protocol):
    """A source that reports what it read and skipped (``{"skipped": {reason: count}, ...}``; in the manifest)."""

    def stats(self) -> dict[str, Any]: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """Anything whose identity is recorded in the manifest and in cache keys."""

    def fingerprint(self) -> str: ...


@runtime_checkable
class LengthFilter(Protocol):
    """A model that can tell which examples do not fit its ``max_length`` (image tokens included).

    Returns the examples to keep and the ids of those dropped (or raises, per the model's own config).
    A model without it gets the runner's text-only check instead.
    """

    def filter_too_long(self, examples: Sequence[Any]) -> tuple[Sequence[Any], list[str]]: ...


@runtime_checkable
class SaveTracking(Protocol):
    """A model that wants to know the folder its weights were last saved to (later stages load from it)."""

    def mark_saved(self, path: Path) -> None: ...
