"""Configuration classes of the online components (pydantic only: no torch, no HTTP).

Components that wrap other components take them as references,
``{"name": ..., "config": {...}}``, validated against the installed plugins when
the spec is validated (the pattern of the evals plugin's judge references): an
unknown name, or a config the referenced component rejects, is a spec error at
its full JSON path, and after validation ``config`` holds the referenced
component's full config with its defaults written out.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, Optional

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator

from mmalign_core.config import SpecPath
from mmalign_core import ComponentConfig, NestedComponent

#: The paper's judge instructions, reworded (method spec 3.2). ``{...}`` placeholders are not allowed here.
DEFAULT_INSTRUCTIONS = (
    "You are an expert annotator comparing two answers to a question about the picture shown above. "
    "Decide which answer is better. The deciding criterion is hallucination: prefer the answer that claims "
    "fewer objects, attributes (such as colour) or relations (such as position) that are not in the picture. "
    "Everything an answer states must be visible in the picture; where the picture is unclear, a good answer "
    "leaves out what cannot be seen with certainty. Between answers that hallucinate equally, prefer the one "
    "that gives more useful information grounded in the picture. For practical questions a helpful answer is "
    "concise and adds no unrelated questions or commentary. "
    "Reply by first naming the better answer as \"Response 1\" or \"Response 2\" (for example: "
    "\"Response 2 is better.\"), then explain why in one or two sentences."
)

#: Layout of a pairwise judging prompt (the image comes first through the model's chat template).
DEFAULT_TEMPLATE = "{instructions}\n\nQuestion: {question}\nResponse 1: {response_1}\nResponse 2: {response_2}"
TEMPLATE_FIELDS = ("instructions", "question", "response_1", "response_2")


def check_template(value: str, fields: tuple[str, ...] = TEMPLATE_FIELDS) -> str:
    """A format template must name every field and nothing else (literal braces doubled)."""
    for name in fields:
        if "{" + name + "}" not in value:
            raise ValueError(f"the template must contain '{{{name}}}'")
    try:
        value.format(**{n: "" for n in fields})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the template has a placeholder other than {', '.join('{' + f + '}' for f in fields)} ({exc}); "
            "write literal braces as '{{' and '}}'"
        ) from None
    return value


# ------------------------------------------------------------------------ component references
class _Ref(NestedComponent):
    """A reference to a registered component: its name and its config (see mmalign_core.refs)."""


class JudgeRef(_Ref):
    """A judge component: ``{"name": ..., "config": {...}}``."""

    kind: ClassVar[str] = "judge"


class ModelRef(_Ref):
    """A model component: ``{"name": ..., "config": {...}}`` (e.g. ``tiny-llava`` or ``hf-vlm`` with a ``path``)."""

    kind: ClassVar[str] = "model"


class PromptSourceRef(_Ref):
    """A static preference or SFT source whose prompts (image + question) are sampled from."""

    kind: ClassVar[str] = "preference_source"
    needs_any: ClassVar[tuple[str, ...]] = ("pairs", "sft")
    refuses: ClassVar[tuple[str, ...]] = ("online",)
    usage: ClassVar[str] = "here (nesting online sources is not supported)"


class PairSourceRef(_Ref):
    """A static preference source whose pairs are used as they are."""

    kind: ClassVar[str] = "preference_source"
    needs_any: ClassVar[tuple[str, ...]] = ("pairs",)
    refuses: ClassVar[tuple[str, ...]] = ("online",)
    usage: ClassVar[str] = "here (nesting online sources is not supported)"


# --------------------------------------------------------------------------- generation engine
class EngineConfig(ComponentConfig):
    """How policy samples are generated.

    ``hf`` (default) calls Hugging Face ``generate`` with a KV cache on the policy itself (CPU and GPU);
    with ``device`` set it keeps its own copy of the weights there and re-syncs it from the policy every
    ``sync_every`` optimizer steps, the way an external engine (vLLM) is kept up to date. ``vllm`` is a
    declared extension point: in this version it raises a clear error (see docs/online.md).
    """

    name: Literal["hf", "vllm"] = Field("hf", description="'hf': transformers generate (KV cache); 'vllm': reserved for a vLLM engine on GPUs (not available in this version).")
    device: Optional[str] = Field(
        None,
        description="hf only: generate on a separate copy of the policy on this device (e.g. 'cuda:1'); null: generate with the policy itself, no copy.",
    )
    sync_every: int = Field(1, ge=1, description="Optimizer steps between weight syncs of an engine that holds its own copy (1: after every step).")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vllm only: share of GPU memory the engine may take.")
    reuse_prompt_pass: bool = Field(
        False,
        description="hf only: run the prompts (images included) with gradients while sampling and keep that pass, so the "
        "training pass of the step runs the language model on the answers only (exact; applies to prefix-sharing families "
        "on one process, with no dropout, when the step's pairs fit one generation batch). Costs memory: the prompts' "
        "activations are held through decoding.",
    )


# ------------------------------------------------------------------------------ online sources
IdenticalRule = Literal["exact", "normalized"]


class OnlineSettings(ComponentConfig):
    """Sampling, judging and logging settings shared by online-dpo and mixed-dpo."""

    judge: JudgeRef = Field(
        default_factory=lambda: {"name": "online:shapes-oracle"},
        validate_default=True,  # resolved with the validating manager, not at import
        description="The judge that ranks the policy's samples, as {\"name\": ..., \"config\": {...}}; default: the shapes-oracle (CPU demo).",
    )
    samples_per_prompt: int = Field(2, ge=2, le=16, description="Responses sampled per prompt (the paper: 2). The judge's best becomes chosen, its worst rejected.")
    max_new_tokens: int = Field(512, ge=1, description="Generation budget per response (the paper: 512).")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (greedy makes every sample of a prompt identical).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (the paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (the paper: 1.0).")
    generation_batch_size: int = Field(16, ge=1, description="Prompts per generate call (each expands to samples_per_prompt sequences).")
    judge_batch_size: int = Field(16, ge=1, description="Comparisons per judge call.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="The generation engine.")
    randomize_order: bool = Field(True, description="Show the responses to the judge in a random order (seeded per step and prompt).")
    swap_check: float = Field(
        0.0, ge=0, le=1,
        description="Share of two-way comparisons judged a second time with the responses swapped; disagreements are logged "
        "as position-inconsistent (a direct position-bias measurement; doubles the judge cost of those comparisons).",
    )
    drop_inconsistent: bool = Field(True, description="Drop a pair whose swapped re-judgement disagrees (only with swap_check > 0).")
    identical: IdenticalRule = Field(
        "normalized",
        description="When two responses count as identical (dropped before judging): 'exact' text, or 'normalized' "
        "(case, whitespace and trailing punctuation ignored).",
    )
    drop_unfinished: bool = Field(
        False,
        description="Drop responses that reached max_new_tokens before judging (they stay in the log); a prompt left with "
        "fewer than 2 counts as 'unfinished'. False: they are judged and trained on as sampled (without an end token). "
        "Needs a model that reports unfinished samples (the hf-vlm models do).",
    )
    log: bool = Field(True, description="Write every sample, verdict and kept pair to JSONL under the stage's data folder (online/).")
    log_images: bool = Field(
        True,
        description="Write each prompt image once as PNG beside the log so online/pairs.jsonl is a self-contained canonical "
        "file the datasets plugin's 'local' source reads (images given by a file path are referenced, not copied).",
    )
    reuse_log: bool = Field(
        True,
        description="On resume, take a step's pairs from the log when it already holds that step (same prompts and settings) "
        "instead of generating and judging again.",
    )


class OnlineDPOConfig(OnlineSettings):
    """Online-DPO: sample from the current policy, let a judge pick the better response (method spec 3.2)."""

    prompts: PromptSourceRef = Field(
        default_factory=lambda: {"name": "shapes:shapes-pairs"},
        validate_default=True,  # resolved with the validating manager, not at import
        description="Where prompts (image + question) come from: any static preference or SFT source, as "
        "{\"name\": ..., \"config\": {...}}; its answers are ignored. Default: shapes-pairs (CPU demo).",
    )


class MixedDPOConfig(OnlineSettings):
    """Mixed-DPO (method spec 2, Eq. 4): per example the offline pair with probability p, else an online pair."""

    base: PairSourceRef = Field(
        default_factory=lambda: {"name": "shapes:shapes-pairs"},
        validate_default=True,  # resolved with the validating manager, not at import
        description="The offline preference source, as {\"name\": ..., \"config\": {...}}; its prompts are also the online prompts. "
        "Default: shapes-pairs (CPU demo).",
    )
    p: float = Field(0.5, ge=0, le=1, description="Probability of using an example's offline pair (the paper: 0.5); online otherwise.")


# ------------------------------------------------------------------------------------- judges
class ShapesOracleConfig(ComponentConfig):
    """Ground-truth judge for the shapes world: reads the scene from the image id and counts hallucinated objects."""

    world: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="The shapes world config (the `world` block of the shapes sources; it must be identical, since image ids "
        "carry the world's hash). Checked against mmalign-shapes' WorldConfig; defaults filled in.",
    )
    criterion: Literal["hallucination-first", "balanced"] = Field(
        "hallucination-first",
        description="'hallucination-first': fewer hallucinated objects wins, ties broken by more correctly named objects; "
        "'balanced': correct minus hallucinated objects, ties broken by fewer hallucinated.",
    )

    @field_validator("world")
    @classmethod
    def _world(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            from mmalign_shapes.config import WorldConfig
        except ImportError:  # pragma: no cover - depends on the installation
            raise ValueError("shapes-oracle needs the mmalign-shapes plugin (pip install mmalign-shapes)") from None
        try:
            return WorldConfig.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<world>'}: {e['msg']}" for e in exc.errors(include_url=False))
            raise ValueError(f"invalid shapes world: {problems}") from None


class VLMJudgeConfig(ComponentConfig):
    """A vision-language model as pairwise judge: it sees the image, the question and both responses."""

    model: Optional[ModelRef] = Field(
        None, description="The judge model, as a model component {\"name\": ..., \"config\": {...}}; required unless self is true."
    )
    self_judge: Optional[bool] = Field(
        None,
        validation_alias=AliasChoices("self", "self_judge"),
        description="(JSON key 'self') Judge with the current policy (the paper's 'self' annotator), passed at call time by "
        "online-dpo / mixed-dpo; 'model' must then be null. Default: true when 'model' is null, else false.",
    )
    decision: Literal["generate", "logprob"] = Field(
        "generate",
        description="'generate': greedy reply parsed for 'Response 1/2' (the paper); 'logprob': compare the judge's log-probs "
        "of the two verdict sentences (always parsable; suits small judges).",
    )
    instructions: str = Field(DEFAULT_INSTRUCTIONS, min_length=1, description="The annotator instructions placed before the question.")
    template: str = Field(DEFAULT_TEMPLATE, description="Prompt layout; placeholders {instructions}, {question}, {response_1}, {response_2}.")
    answer_prefix: str = Field("", description="Text the judge's reply is forced to start with (generate mode), e.g. 'Response'.")
    max_new_tokens: int = Field(128, ge=1, description="Reply budget in generate mode.")
    batch_size: int = Field(8, ge=1, description="Judging prompts per generate / log-prob call.")
    tie_margin: float = Field(0.0, ge=0, description="logprob mode: a log-prob difference at most this large is a tie.")
    verdicts: tuple[str, str] = Field(
        ("Response 1 is better.", "Response 2 is better."),
        description="logprob mode: the two verdict sentences whose log-probs are compared.",
    )

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _model_or_self(self) -> "VLMJudgeConfig":
        if self.self_judge is None:
            object.__setattr__(self, "self_judge", self.model is None)
        if self.self_judge and self.model is not None:
            raise ValueError("set either 'model' or 'self': true, not both")
        if not self.self_judge and self.model is None:
            raise ValueError("set 'model' (a model component) or 'self': true (judge with the current policy)")
        if self.verdicts[0] == self.verdicts[1]:
            raise ValueError("the two verdict sentences must differ")
        return self


_URL = re.compile(r"^https?://[^\s/@]+(:\d+)?(/[^\s?#]*)?$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OpenAICompatibleConfig(ComponentConfig):
    """An HTTP judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp, Ollama, ...)."""

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="Endpoint root, e.g. 'https://api.openai.com/v1' or 'http://127.0.0.1:8000/v1'; '/chat/completions' is appended.",
    )
    model: str = Field("gpt-4o", min_length=1, description="Model name sent with every request.")
    api_key_env: Optional[str] = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key, read at call time; the key itself is never put in "
        "a config, manifest, log or cache. Null, or an unset variable: no Authorization header (local servers).",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of the judge.")
    max_tokens: int = Field(256, ge=1, description="Reply budget.")
    system_prompt: Optional[str] = Field(None, description="Optional system message.")
    send_images: bool = Field(True, description="Attach each request's images as base64 PNG data URLs (a vision model); false: text only.")
    instructions: str = Field(DEFAULT_INSTRUCTIONS, min_length=1, description="Annotator instructions for pairwise comparisons.")
    template: str = Field(DEFAULT_TEMPLATE, description="Pairwise prompt layout; placeholders {instructions}, {question}, {response_1}, {response_2}.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(3, ge=0, le=10, description="Retries after a timeout, a connection error, HTTP 408/409/425/429/5xx or an unreadable reply.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry (with up to 10% jitter), capped by backoff_max_s.")
    backoff_max_s: float = Field(30.0, ge=0, description="Longest delay between retries (also caps a server's Retry-After).")
    max_concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once.")
    cache: bool = Field(True, description="Keep every reply on disk (judge-cache/ under the run cache), keyed by judge identity and request; reruns reuse them.")
    cache_dir: Optional[SpecPath] = Field(None, description="Folder of the reply cache; default: the run's cache folder (MMALIGN_CACHE or ~/.cache/mmalign).")
    on_error: Literal["empty", "raise"] = Field(
        "empty",
        description="After the retries are spent: 'empty' returns an empty reply (the pair is dropped and counted as unparsable) "
        "and logs the error; 'raise' stops the run. Authentication and not-found errors (401, 403, 404) always raise.",
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields merged into every request body (provider options).")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.rstrip("/")
        if not _URL.match(value):
            raise ValueError("base_url must be an http(s) URL without credentials, query or fragment, e.g. 'http://127.0.0.1:8000/v1'")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _ENV.match(value):
            raise ValueError("api_key_env is the *name* of an environment variable (letters, digits, '_'), not the key")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @field_validator("extra_body")
    @classmethod
    def _body(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"model", "messages"} & set(value)
        if reserved:
            raise ValueError(f"extra_body may not set {sorted(reserved)}")
        return value


class RewardTrainConfig(ComponentConfig):
    """How a reward model is trained when no trained one exists (Bradley-Terry, method spec 4)."""

    data: PairSourceRef = Field(
        default_factory=lambda: {"name": "shapes:shapes-pairs"},
        validate_default=True,  # resolved with the validating manager, not at import
        description="Preference pairs to train on, as a preference source {\"name\": ..., \"config\": {...}}; default: shapes-pairs (CPU demo).",
    )
    max_pairs: Optional[int] = Field(None, ge=2, description="Use only the first N pairs of the source.")
    heldout_fraction: float = Field(0.05, gt=0, lt=1, description="Share of pairs held out for the pairwise accuracy (the paper: a small split; default 5%).")
    max_heldout: int = Field(500, ge=1, description="Most held-out pairs.")
    steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Pairs per step.")
    lr: float = Field(1e-4, gt=0, description="Learning rate of the backbone (when trained).")
    head_lr: float = Field(1e-3, gt=0, description="Learning rate of the scalar head.")
    train_backbone: bool = Field(True, description="Train the backbone's language model with the head (false: only the head).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    seed: int = Field(0, description="Seed of the split, the batch order and the head initialisation.")


class RewardModelConfig(ComponentConfig):
    """A scalar reward head on a vision-language backbone, used to rank responses."""

    model: Optional[ModelRef] = Field(
        default_factory=lambda: {"name": "tiny:tiny-llava"},
        validate_default=True,  # resolved with the validating manager, not at import
        description="The backbone, as a model component; needed to train (a saved reward model records its own). Default: tiny-llava (CPU demo).",
    )
    path: Optional[SpecPath] = Field(
        None,
        description="Folder of a trained reward model (reward.json, head.pt, backbone/). If it holds none and 'train' is set, the "
        "model is trained and saved there; null: a folder under the run cache keyed by this config.",
    )
    train: Optional[RewardTrainConfig] = Field(
        default_factory=RewardTrainConfig,
        description="Training settings, used only when no trained reward model exists at 'path'; null: never train (a missing model is an error).",
    )
    batch_size: int = Field(16, ge=1, description="Responses scored per forward pass.")
    tie_margin: float = Field(0.0, ge=0, description="Rewards closer than this are a tie.")
    min_heldout_accuracy: Optional[float] = Field(
        None, ge=0, le=1, description="Refuse to judge with a reward model whose held-out pairwise accuracy is below this."
    )
    device: str = Field("cpu", description="Device of the reward model ('cpu', 'cuda', 'cuda:N').")

    @model_validator(mode="after")
    def _source(self) -> "RewardModelConfig":
        if self.path is None and self.train is None:
            raise ValueError("set 'path' (a trained reward model) or 'train' (with 'model') to train one")
        if self.train is not None and self.model is None:
            raise ValueError("training a reward model needs 'model' (the backbone)")
        return self


__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_TEMPLATE",
    "EngineConfig",
    "JudgeRef",
    "MixedDPOConfig",
    "ModelRef",
    "OnlineDPOConfig",
    "OnlineSettings",
    "OpenAICompatibleConfig",
    "PairSourceRef",
    "PromptSourceRef",
    "RewardModelConfig",
    "RewardTrainConfig",
    "ShapesOracleConfig",
    "VLMJudgeConfig",
    "check_template",
]
