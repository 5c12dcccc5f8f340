"""Part ``correctness``: the engine's fast paths against their plain computations, on every family's tiny
checkpoint (tests/hf/tiny_families.py), per attention implementation, in float32 and bfloat16.

For each (family, attention, dtype):

- ``pair_logps``: the engine's path (prefix sharing where the family has it, else one image encoding per
  pair) against the plain per-sequence path, log-probs and gradients of every parameter;
- BDHS's key mask (``mmalign_bdhs``): hiding nothing (rho = 0) generates exactly what normal generation
  does; hiding every image token (rho = 1) makes the next-token logits independent of the image;
- the lean decoder: greedy tokens of ``sample_tokens`` equal those of transformers' ``generate``.

float32 runs with TF32 switched off and must agree to float32 noise. bfloat16 cannot agree bit for bit
(other kernels, other summation orders), so it is judged against the float32 result: the engine path's
error must not exceed twice the plain path's own bfloat16 error, and greedy tokens may part only where
``generate``'s two candidates are within bfloat16 resolution of each other (a near tie).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from .paths import add_helpers
from .record import Recorder
from .sizes import Profile

RED, BLUE = (210, 30, 30), (30, 60, 220)
PREFIXES = ("", "a red", "a blue square and")

# Agreement thresholds (see the module docstring).
FP32_LOGP_ATOL = 1e-3
FP32_GRAD_RTOL = 1e-3
BF16_FACTOR = 2.0  # engine error <= BF16_FACTOR x plain error + floor
BF16_LOGP_FLOOR = 0.02
BF16_GRAD_FLOOR = 0.01
FP32_LOGIT_ATOL = 1e-4
BF16_LOGIT_RTOL = 0.02  # of the largest |logit|
TIE_FLOOR = 0.05  # a near tie: generate's two candidates within max(TIE_FLOOR, BF16_LOGIT_RTOL x max |score|)


class Families:
    """Tiny checkpoints built on first use, loaded through the registered ``hf-vlm`` component."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        if name not in self.built:
            from tiny_families import BUILDERS

            if name not in BUILDERS:
                raise KeyError(f"unknown family {name!r}; tiny builders exist for {sorted(BUILDERS)}")
            self.built[name] = BUILDERS[name](self.root / name)
        return self.built[name]

    def load(self, name: str, attention: str, device: str) -> Any:
        import torch

        from mmalign_hf.plugin import mmalign_models

        torch.manual_seed(0)
        model = mmalign_models()[0].build({"path": str(self.folder(name)), "dtype": "float32", "attn_implementation": attention})
        return model.to(device)


def _image(colour: tuple[int, int, int], size: int = 48) -> Any:
    from bdhs_helpers import shapes_image

    return shapes_image(colour, key=f"gpu-check{colour}{size}", size=size)


def _pairs() -> list[Any]:
    from mmalign_core.types import PreferencePair

    return [
        PreferencePair(id="a", prompt="Describe the image.", chosen="a red circle.", rejected="a red circle and a blue square.",
                       images=[_image(RED)]),
        PreferencePair(id="b", prompt="Is there a green star in the image?", chosen="No.", rejected="Yes.", images=[_image(BLUE, 64)]),
        PreferencePair(id="c", prompt="Describe a typical scene.", chosen="a blue square.", rejected="two blue squares and a star.",
                       images=[]),
    ]


# ------------------------------------------------------------------------------------------------ pair_logps
def engine_path(m: Any) -> str:
    if m._can_share_prefix(2):
        return "prefix-sharing"
    if m._vision_tower() is not None:
        return "one-image-encoding"
    return "plain"


def scores(m: Any, pairs: list[Any], *, engine: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Log-probs and gradients (of chosen - 0.5 rejected) through the engine's path or the plain one."""
    import torch

    had_own = "SHARED_VISION_MODEL_TYPES" in m.__dict__
    saved_vision, saved_sharing = m.SHARED_VISION_MODEL_TYPES, m.prefix_sharing
    m.prefix_sharing = engine
    if not engine:
        m.SHARED_VISION_MODEL_TYPES = frozenset()
    try:
        m.model.zero_grad(set_to_none=True)
        out = m.pair_logps(pairs)
        (out.chosen.sum() - 0.5 * out.rejected.sum()).backward()
        logps = {"chosen": out.chosen.detach().float().cpu(), "rejected": out.rejected.detach().float().cpu()}
        grads = {n: p.grad.detach().float().cpu() for n, p in m.model.named_parameters() if p.grad is not None}
    finally:
        m.model.zero_grad(set_to_none=True)
        m.prefix_sharing = saved_sharing
        if had_own:
            m.SHARED_VISION_MODEL_TYPES = saved_vision
        else:
            m.__dict__.pop("SHARED_VISION_MODEL_TYPES", None)
    if not torch.isfinite(logps["chosen"]).all() or not torch.isfinite(logps["rejected"]).all():
        raise FloatingPointError(f"non-finite log-probs: {logps}")
    return logps, grads


def logp_error(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def grad_error(a: dict[str, Any], b: dict[str, Any]) -> float:
    """||a - b|| / ||b|| over all gradients together (a missing gradient counts as infinite error)."""
    if a.keys() != b.keys():
        return float("inf")
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in b)
    den = sum(float(b[k].pow(2).sum()) for k in b)
    return (num / max(den, 1e-30)) ** 0.5


def check_pair_logps(m: Any, rec: Recorder, tag: str, dtype: str, reference: dict[str, Any]) -> dict[str, Any]:
    pairs = _pairs()
    path = engine_path(m)
    eng = scores(m, pairs, engine=True)
    ref_logps, ref_grads = reference["plain32"]
    out: dict[str, Any] = {"engine_path": path, "grads": len(ref_grads),
                           "logp_err_engine": logp_error(eng[0], ref_logps), "grad_err_engine": grad_error(eng[1], ref_grads)}
    if dtype == "float32":
        ok = out["logp_err_engine"] <= FP32_LOGP_ATOL and out["grad_err_engine"] <= FP32_GRAD_RTOL
        rule = f"logp err <= {FP32_LOGP_ATOL}, grad rel err <= {FP32_GRAD_RTOL}"
    else:
        plain = scores(m, pairs, engine=False)
        out.update(logp_err_plain=logp_error(plain[0], ref_logps), grad_err_plain=grad_error(plain[1], ref_grads))
        ok = (out["logp_err_engine"] <= BF16_FACTOR * out["logp_err_plain"] + BF16_LOGP_FLOOR
              and out["grad_err_engine"] <= BF16_FACTOR * out["grad_err_plain"] + BF16_GRAD_FLOOR)
        rule = f"engine err <= {BF16_FACTOR} x plain bf16 err + ({BF16_LOGP_FLOOR} logp, {BF16_GRAD_FLOOR} grad), both against float32"
    rec.check(f"{tag}: pair_logps ({path}) equals the plain per-sequence path", ok, rule=rule,
              **{k: v for k, v in out.items() if k != "grads"})
    return out


# -------------------------------------------------------------------------------------------------- BDHS
def check_bdhs(m: Any, rec: Recorder, tag: str, dtype: str, new_tokens: int) -> dict[str, Any]:
    import numpy as np

    from mmalign_bdhs.generation import Row, first_token_logits, generate_rows

    def none(k: int) -> Any:
        return np.zeros(k, dtype=bool)

    def every(k: int) -> Any:
        return np.ones(k, dtype=bool)

    red, blue = _image(RED), _image(BLUE)  # one size: every family then has as many image tokens for both
    rows0 = [Row("Describe the image.", [red], p, none) for p in PREFIXES]
    masked = generate_rows(m, rows0, method="attention", max_new_tokens=new_tokens)
    normal = generate_rows(m, rows0, method=None, max_new_tokens=new_tokens)
    a = first_token_logits(m, rows0, method="attention")
    b = first_token_logits(m, rows0, method=None)
    scale = float(b.abs().max())
    rho0_diff = float((a - b).abs().max())
    tol = FP32_LOGIT_ATOL if dtype == "float32" else BF16_LOGIT_RTOL * scale
    texts_equal = masked == normal
    rec.check(f"{tag}: BDHS rho=0 equals normal generation", rho0_diff <= tol and (texts_equal or dtype != "float32"),
              texts_equal=texts_equal, logit_diff=rho0_diff, tolerance=tol,
              **({} if texts_equal else {"masked": masked, "normal": normal}))
    red_all = [Row("Describe the image.", [red], p, every) for p in PREFIXES]
    blue_all = [Row("Describe the image.", [blue], p, every) for p in PREFIXES]
    rho1_diff = float((first_token_logits(m, red_all) - first_token_logits(m, blue_all)).abs().max())
    seen = float((first_token_logits(m, [Row(r.prompt, r.images, r.prefix) for r in red_all], method=None)
                  - first_token_logits(m, [Row(r.prompt, r.images, r.prefix) for r in blue_all], method=None)).abs().max())
    gen_equal = generate_rows(m, red_all, max_new_tokens=new_tokens) == generate_rows(m, blue_all, max_new_tokens=new_tokens)
    tol1 = FP32_LOGIT_ATOL if dtype == "float32" else BF16_LOGIT_RTOL * scale
    rec.check(f"{tag}: BDHS rho=1 makes logits image-independent", rho1_diff <= tol1 and seen > 10 * rho1_diff and gen_equal,
              logit_diff_hidden=rho1_diff, logit_diff_unmasked=seen, tolerance=tol1, generations_equal=gen_equal)
    return {"rho0_logit_diff": rho0_diff, "rho0_texts_equal": texts_equal, "rho1_logit_diff": rho1_diff,
            "unmasked_image_effect": seen, "rho1_generations_equal": gen_equal}


# ---------------------------------------------------------------------------------------------- decoding
def _requests() -> list[Any]:
    from mmalign_core.types import GenerationRequest

    colours = (RED, BLUE, (30, 160, 60), (200, 200, 40))
    return [GenerationRequest("Describe the image." + " Please be brief." * (i % 3), [_image(c)]) for i, c in enumerate(colours)]


def first_divergences(lean: list[list[int]], gen: list[list[int]], scores: Optional[list[Any]]) -> list[dict[str, Any]]:
    """Per row that differs: the first differing step, both tokens and generate's score margin between them."""
    out = []
    for row, (a, b) in enumerate(zip(lean, gen)):
        if a == b:
            continue
        t = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        item: dict[str, Any] = {"row": row, "step": t, "lean": a[t], "generate": b[t]}
        if scores is not None and t < len(scores):
            s = scores[t][row].float()
            finite = s[s.isfinite()]
            item["margin"] = float(s[b[t]] - s[a[t]])
            item["tie_tolerance"] = max(TIE_FLOOR, BF16_LOGIT_RTOL * float(finite.abs().max()))
        out.append(item)
    return out


def check_decoding(m: Any, rec: Recorder, tag: str, dtype: str, new_tokens: int) -> dict[str, Any]:
    from mmalign_hf.sampling import LeanDecoder, decode_parts

    parts = decode_parts(m.model)
    if parts is None:
        return {"applies": False, "why": "this family decodes through generate() (not in FAST_DECODE_MODEL_TYPES)"}
    reqs = _requests()
    inputs = m.generation_inputs(reqs)
    width = inputs["input_ids"].shape[1]
    lean_decoder = LeanDecoder.eligible(parts[0], width + new_tokens) is not None
    lean = m.sample_tokens(reqs, n=1, max_new_tokens=new_tokens, do_sample=False).tolist()
    banned, stop = m.banned_token_ids(), m.stop_ids()
    kwargs: dict[str, Any] = dict(max_new_tokens=new_tokens, do_sample=False, num_return_sequences=1, pad_token_id=m.pad_token_id,
                                  eos_token_id=stop or None, use_cache=True, temperature=None, top_p=None, top_k=None,
                                  output_scores=True, return_dict_in_generate=True)
    if banned:
        kwargs["bad_words_ids"] = [[t] for t in banned]
    import torch

    with torch.no_grad():
        out = m.model.generate(**inputs, **kwargs)
    gen = out.sequences[:, width:].tolist()
    gen = [row + [m.pad_token_id] * (new_tokens - len(row)) for row in gen]
    divs = first_divergences(lean, gen, list(out.scores))
    exact = not divs
    ties = all("margin" in d and abs(d["margin"]) <= d["tie_tolerance"] for d in divs)
    ok = exact or (dtype != "float32" and ties)
    rec.check(f"{tag}: lean greedy decoding equals generate", ok, exact=exact, lean_decoder=lean_decoder,
              divergences=divs, rule="exact in float32; in bfloat16 rows may part only at a near tie of generate's scores")
    return {"applies": True, "lean_decoder": lean_decoder, "rows": len(lean), "rows_equal": len(lean) - len(divs), "divergences": divs}


# ------------------------------------------------------------------------------------------------- the part
def run(profile: Profile, rec: Recorder, scratch: Path) -> None:
    import torch

    add_helpers()
    sizes = profile.correctness
    # float32 means float32 here: no TF32 in matrix products or convolutions (both paths would differ by it).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    families = Families(scratch / "families")
    for family in sizes.families:
        if rec.step(f"{family}/build", lambda: {"folder": str(families.folder(family))}, need_s=2) is None:
            continue
        for attention, dtypes in sizes.runs:
            held: dict[str, Any] = {}
            key = f"{family}/{attention}"

            def load() -> dict[str, Any]:
                held["m"] = families.load(family, attention, profile.device)
                cfg = held["m"].model.config
                text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
                return {"attn_implementation": getattr(text, "_attn_implementation", None)}

            if rec.step(f"{key}/load", load, need_s=2) is None:
                continue
            m = held["m"]
            reference: dict[str, Any] = {}
            rec.step(f"{key}/float32-reference", lambda: reference.update(plain32=scores(m, _pairs(), engine=False)) or {})
            for dtype in dtypes:
                tag = f"{key}/{dtype}"
                if dtype != "float32":
                    m.model.to(getattr(torch, dtype))
                steps: list[tuple[str, Callable[[], Any]]] = [
                    ("bdhs", lambda: check_bdhs(m, rec, tag, dtype, sizes.new_tokens)),
                    ("decoding", lambda: check_decoding(m, rec, tag, dtype, sizes.new_tokens)),
                ]
                if "plain32" in reference:
                    steps.insert(0, ("pair_logps", lambda: check_pair_logps(m, rec, tag, dtype, reference)))
                for name, fn in steps:
                    rec.step(f"{tag}/{name}", fn, need_s=1)
            del m, held["m"]
