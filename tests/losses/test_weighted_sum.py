"""The weighted sum of losses: validation through the registry, the formula, metrics and gradients."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from pydantic import Field, ValidationError

from mmalign_core import ComponentConfig, LossEntry, hookimpl
from mmalign_core.manager import create_plugins
from mmalign_core.protocols import LossInputs, LossOutput, PairLogps
from mmalign_core.spec import check_spec
from mmalign_losses.config import WeightedSumConfig, term_labels
from mmalign_losses.weighted import WeightedSumLoss

PC, PR, RC, RR = [-10.0, -3.5], [-12.0, -2.0], [-11.0, -3.0], [-11.5, -2.5]
TC, TR = (4, 5), (6, 2)


def _inputs() -> LossInputs:
    t = lambda v, g=False: torch.tensor(v, dtype=torch.float64, requires_grad=g)  # noqa: E731
    pol = PairLogps(chosen=t(PC, True), rejected=t(PR, True), chosen_tokens=torch.tensor(TC), rejected_tokens=torch.tensor(TR))
    ref = PairLogps(chosen=t(RC), rejected=t(RR), chosen_tokens=torch.tensor(TC), rejected_tokens=torch.tensor(TR))
    return LossInputs(policy=pol, reference=ref, pairs=[])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _rho(i: int) -> float:
    return (PC[i] - RC[i]) - (PR[i] - RR[i])


def _cfg(*terms) -> WeightedSumConfig:
    return WeightedSumConfig.model_validate({"terms": list(terms)})


def test_weighted_sum_matches_the_formula() -> None:
    cfg = _cfg(
        {"loss": {"name": "dpo", "config": {"beta": 0.2}}, "weight": 0.8},
        {"loss": {"name": "slic"}, "weight": 0.5},
        {"loss": {"name": "sft"}, "weight": 0.2},
    )
    inp = _inputs()
    out = WeightedSumLoss(cfg)(inp)
    dpo = sum(-_log_sigmoid(0.2 * _rho(i)) for i in range(2)) / 2
    slic = sum(max(0.0, 1 - 0.1 * _rho(i)) for i in range(2)) / 2
    sft = -sum(PC) / sum(TC)
    assert out.loss.item() == pytest.approx(0.8 * dpo + 0.5 * slic + 0.2 * sft, rel=1e-12)
    assert out.metrics["loss"] == pytest.approx(0.8 * dpo + 0.5 * slic + 0.2 * sft)
    assert out.metrics["dpo/loss"] == pytest.approx(dpo) and out.metrics["slic/loss"] == pytest.approx(slic)
    assert out.metrics["sft/loss"] == pytest.approx(sft) and out.metrics["sft/tokens"] == sum(TC)
    assert out.metrics["dpo/rewards/margin"] == pytest.approx(sum(0.2 * _rho(i) for i in range(2)) / 2)
    assert all(isinstance(v, float) for v in out.metrics.values())
    out.loss.backward()
    assert (inp.policy.chosen.grad < 0).all() and (inp.policy.rejected.grad > 0).all()


def test_gradients_are_the_weighted_sum_of_the_terms() -> None:
    cfg = _cfg({"loss": {"name": "ipo"}, "weight": 0.3}, {"loss": {"name": "sft"}, "weight": 2.0})
    inp = _inputs()
    WeightedSumLoss(cfg)(inp).loss.backward()
    # d/d chosen_i of 0.3 * mean_i (0.9 rho_i - 1)^2 + 2 * (-sum chosen / sum tokens)
    expected = [0.3 * 2 * (0.9 * _rho(i) - 1) * 0.9 / 2 - 2.0 / sum(TC) for i in range(2)]
    assert inp.policy.chosen.grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_names_are_resolved_qualified_and_defaults_filled() -> None:
    cfg = _cfg({"loss": {"name": "ipo", "config": {"parametrisation": "trl"}}})
    term = cfg.terms[0]
    assert term.loss.name == "losses:ipo" and term.weight == 1.0
    assert term.loss.config == {"beta": 0.9, "reduction": None, "nll_alpha": 0.0, "parametrisation": "trl"}
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert WeightedSumConfig.model_validate(dumped) == cfg  # a resolved spec reads back to the same config


def test_default_is_dpo_plus_sft() -> None:
    cfg = WeightedSumConfig()
    assert [(t.loss.name, t.weight) for t in cfg.terms] == [("losses:dpo", 1.0), ("losses:sft", 1.0)]


def test_unknown_term_name_gives_did_you_mean_at_validation() -> None:
    with pytest.raises(ValidationError) as info:
        _cfg({"loss": {"name": "dpoo"}, "weight": 1.0})
    text = str(info.value)
    assert "Unknown loss 'dpoo'. Did you mean 'dpo'" in text  # (other installed losses, such as 'mdpo', may follow)
    assert info.value.errors()[0]["loc"] == ("terms", 0, "loss")


def test_unknown_term_name_is_a_spec_problem_with_its_path() -> None:
    spec = {
        "name": "ws",
        "model": {"name": "tiny-llava"},
        "stages": [{
            "type": "align",
            "data": {"name": "shapes-pairs"},
            "loss": {"name": "weighted-sum", "config": {"terms": [
                {"loss": {"name": "dpo"}, "weight": 0.5}, {"loss": {"name": "slci"}, "weight": 0.5},
            ]}},
        }],
    }
    pytest.importorskip("mmalign_shapes.plugin", reason="the spec uses the shapes source")
    validated, problems = check_spec(spec)
    assert validated is None
    found = [p for p in problems if p.path.startswith("stages[0].loss.config.terms[1]")]
    assert found and "Did you mean 'slic'?" in found[0].message, problems
    spec["stages"][0]["loss"]["config"]["terms"][1]["loss"]["name"] = "slic"
    validated, problems = check_spec(spec)
    assert validated is not None, problems
    assert validated.resolved["stages"][0]["loss"]["config"]["terms"][1]["loss"]["name"] == "losses:slic"


@pytest.mark.parametrize("weight", [float("inf"), float("-inf"), float("nan"), -0.5])
def test_weights_must_be_finite_and_non_negative(weight: float) -> None:
    with pytest.raises(ValidationError, match="weight"):
        _cfg({"loss": {"name": "dpo"}, "weight": weight})


def test_weights_cannot_all_be_zero_and_terms_cannot_be_empty() -> None:
    with pytest.raises(ValidationError, match="positive weight"):
        _cfg({"loss": {"name": "dpo"}, "weight": 0.0})
    with pytest.raises(ValidationError, match="at least 1"):
        WeightedSumConfig.model_validate({"terms": []})


def test_invalid_term_config_is_reported_with_its_field() -> None:
    with pytest.raises(ValidationError) as info:
        _cfg({"loss": {"name": "ipo", "config": {"beta": -1, "parametrization": "trl"}}})
    text = str(info.value)
    assert "invalid config for loss 'losses:ipo'" in text and "config.beta" in text and "config.parametrization" in text


def test_term_labels_number_repeats_and_must_be_unique() -> None:
    cfg = _cfg(
        {"loss": {"name": "dpo", "config": {"beta": 0.1}}},
        {"loss": {"name": "dpo", "config": {"beta": 0.5}}},
        {"loss": {"name": "sft"}, "label": "gen"},
    )
    assert term_labels(cfg.terms) == ["dpo-1", "dpo-2", "gen"]
    out = WeightedSumLoss(cfg)(_inputs())
    assert {"dpo-1/loss", "dpo-2/loss", "gen/loss"} <= set(out.metrics)
    with pytest.raises(ValidationError, match="unique"):
        _cfg({"loss": {"name": "dpo"}, "label": "x"}, {"loss": {"name": "sft"}, "label": "x"})
    with pytest.raises(ValidationError, match="label"):
        _cfg({"loss": {"name": "dpo"}, "label": "a/b"})


def test_nested_weighted_sum_prefixes_twice() -> None:
    cfg = _cfg(
        {"loss": {"name": "weighted-sum", "config": {"terms": [{"loss": {"name": "dpo"}, "weight": 1.0}]}}, "label": "inner"},
        {"loss": {"name": "sft"}, "weight": 0.5},
    )
    out = WeightedSumLoss(cfg)(_inputs())
    assert out.metrics["inner/dpo/loss"] == pytest.approx(out.metrics["inner/loss"])
    assert out.loss.item() == pytest.approx(out.metrics["inner/loss"] + 0.5 * out.metrics["sft/loss"])


def test_entry_declares_the_union_of_what_terms_can_need() -> None:
    from mmalign_core.testing import check_plugin

    entry = check_plugin("mmalign_losses.plugin", name="losses").resolve("loss", "weighted-sum")
    assert entry.requires == {"reference", "rejected"} and entry.metrics == ("loss",)


class _ToyConfig(ComponentConfig):
    scale: float = Field(1.0, description="Scale.")


class _ToyLoss:
    def __init__(self, config: _ToyConfig):
        self.config = config

    def __call__(self, inputs: LossInputs) -> LossOutput:
        loss = -self.config.scale * inputs.policy.chosen.mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach())})


class _ToyPlugin:
    @hookimpl
    def mmalign_losses(self):
        return [LossEntry(name="toy-nll", summary="Toy.", config=_ToyConfig, factory=f"{__name__}:_ToyLoss")]


def test_a_manager_can_be_passed_through_the_validation_context() -> None:
    toy = create_plugins(("toy", _ToyPlugin()))
    raw = {"terms": [{"loss": {"name": "toy-nll", "config": {"scale": 2.0}}}]}
    with pytest.raises(ValidationError, match="Unknown loss 'toy-nll'"):
        WeightedSumConfig.model_validate(raw)  # the process-wide manager does not know it
    cfg = WeightedSumConfig.model_validate(raw, context={"plugins": toy})
    assert cfg.terms[0].loss.name == "toy:toy-nll"
    out = WeightedSumLoss(cfg, plugins=toy)(_inputs())
    assert out.loss.item() == pytest.approx(-2.0 * sum(PC) / 2)


def test_validation_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from mmalign_losses.config import WeightedSumConfig\n"
        "WeightedSumConfig.model_validate({'terms': [{'loss': {'name': 'avg-dpo', 'config': {'gamma': 0.3}}, 'weight': 1},"
        " {'loss': {'name': 'sft'}, 'weight': 0.1}]})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
