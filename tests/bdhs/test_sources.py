"""The bdhs sources on the tiny random LLaVA: contracts, offline cache and resume, online batches,
POVID-style distortion, and the run checks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mmalign_core.manager import get_plugins
from mmalign_core.spec import check_spec
from mmalign_core.testing import check_entry, check_plugin, check_source, make_context

import mmalign_bdhs.plugin as plugin
import mmalign_bdhs.sources as sources_mod
from mmalign_bdhs.sources import ONLINE_PLACEHOLDER

BASE = {"name": "shapes-pairs", "config": {"n_pairs": 6, "mode": "partner", "absent_fraction": 0.5}}
FAST = {"embedder": {"name": "bag-of-words"}, "n_bdhs": 2, "max_new_tokens": 12, "max_new_tokens_full": 16}


def _entry(kind: str, name: str) -> Any:
    return get_plugins().resolve(kind, name)


def _ctx(tmp_path: Path, model: Any = None, name: str = "ctx") -> Any:
    ctx = make_context(tmp_path / name)
    if model is not None:
        ctx.extras["model"] = model
    return ctx


def test_every_entry_passes_the_contract_checks() -> None:
    plugins = check_plugin(plugin, "bdhs")
    names = {(e.kind, e.name) for e in plugins.entries_of("bdhs")}
    assert names == {("preference_source", "bdhs"), ("preference_source", "bdhs-online"), ("preference_source", "povid-distortion"),
                     ("loss", "povid-dpo"), ("embedder", "minilm"), ("embedder", "sentence-transformers"), ("embedder", "bag-of-words")}
    for kind, name in names:
        check_entry(_entry(kind, name))


def test_offline_source_contract(tiny_model, tmp_path: Path) -> None:
    cfg = {"base": BASE, **FAST, "cache_dir": str(tmp_path / "cache")}
    checked = check_source(_entry("preference_source", "bdhs"), cfg, _ctx(tmp_path, tiny_model))
    pairs = checked["pairs"]
    assert len(pairs) == 6 and all(p.source == "bdhs" and "bdhs" in p.meta for p in pairs)
    base = list(_entry("preference_source", "shapes-pairs").build(BASE["config"]).pairs(None))
    assert [p.meta["bdhs"]["external_rejected"] for p in pairs] == [b.rejected for b in base]  # kept in meta
    assert all(p.meta["truth"] == b.meta["truth"] for p, b in zip(pairs, base))  # the base meta travels along


def test_online_source_contract_and_prepare_batch(tiny_model, tmp_path: Path) -> None:
    entry = _entry("preference_source", "bdhs-online")
    base = {"name": "shapes-sft", "config": {"n_examples": 12}}
    checked = check_source(entry, {"base": base, **FAST}, _ctx(tmp_path))
    pool = checked["pairs"]
    assert all(p.rejected == ONLINE_PLACEHOLDER for p in pool)  # SFT base: no rejected answer until training
    src = entry.build({"base": base, **FAST})
    ctx = _ctx(tmp_path, name="online")
    pool = src.pairs(ctx)
    assert src.stats()["skipped"].get("text_only", 0) > 0  # text-only SFT examples have nothing to hide
    batch = [pool[i] for i in range(4)]
    with torch.no_grad():
        out, stats = src.prepare_batch(batch, tiny_model, ctx, step=3)
        again, _ = src.prepare_batch(batch, tiny_model, ctx, step=3)
        other, _ = src.prepare_batch(batch, tiny_model, ctx, step=4)
    assert [p.id for p in out] == [p.id for p in batch][: len(out)] and len(out) >= 3
    assert all(p.rejected != ONLINE_PLACEHOLDER and p.rejected != p.chosen for p in out)
    assert {"iterations_mean", "nonsimilar_after_1", "nonsimilar_after_2", "dropped", "seconds"} <= set(stats)
    assert [p.rejected for p in again] == [p.rejected for p in out]  # a step's draws are reproducible (resume)
    assert [p.rejected for p in other] != [p.rejected for p in out]
    assert "running/nonsimilar_after_1" in src.stats()
    assert json.loads((Path(ctx.output_dir) / "bdhs-online-stats.json").read_text())["n"] == 3 * len(batch)


def test_prepare_batch_follows_the_current_policy(tiny_model, tmp_path: Path) -> None:
    src = _entry("preference_source", "bdhs-online").build({"base": BASE, **FAST, "n_bdhs": 1})
    ctx = _ctx(tmp_path)
    batch = list(src.pairs(ctx))[:4]
    with torch.no_grad():
        before, _ = src.prepare_batch(batch, tiny_model, ctx, step=0)
        for p in tiny_model.module.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        after, _ = src.prepare_batch(batch, tiny_model, ctx, step=0)
    assert [p.rejected for p in before] != [p.rejected for p in after]


def test_offline_cache_resumes_after_a_kill_and_is_reused(tiny_model, tmp_path: Path, monkeypatch) -> None:
    entry = _entry("preference_source", "bdhs")
    cfg = {"base": BASE, **FAST, "chunk_pairs": 2}
    reference = entry.build({**cfg, "cache_dir": str(tmp_path / "b")}).pairs(_ctx(tmp_path, tiny_model, "b"))

    calls = {"n": 0}
    real = sources_mod.BDHSSampler.sample

    def dies_on_third_chunk(self, model, items, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(self, model, items, **kw)

    monkeypatch.setattr(sources_mod.BDHSSampler, "sample", dies_on_third_chunk)
    src = entry.build({**cfg, "cache_dir": str(tmp_path / "a")})
    with pytest.raises(KeyboardInterrupt):
        src.pairs(_ctx(tmp_path, tiny_model, "a1"))
    folder = next((tmp_path / "a").iterdir())
    lines = (folder / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads((folder / "info.json").read_text())["status"] == "partial"
    with open(folder / "pairs.jsonl", "a") as fh:  # a line cut short by the kill
        fh.write('{"id": "shapes-pairs:0:4", "prom')

    calls["n"] = -100
    logs: list[str] = []
    ctx = _ctx(tmp_path, tiny_model, "a2")
    ctx.log = logs.append
    resumed = entry.build({**cfg, "cache_dir": str(tmp_path / "a")}).pairs(ctx)
    assert calls["n"] == -99  # one chunk left to generate
    assert any("resuming" in line and "4 of 6" in line for line in logs)
    assert [(p.id, p.rejected) for p in resumed] == [(p.id, p.rejected) for p in reference]

    def never(self, model, items, **kw):
        raise AssertionError("a complete dataset is reused, not regenerated")

    monkeypatch.setattr(sources_mod.BDHSSampler, "sample", never)
    again = entry.build({**cfg, "cache_dir": str(tmp_path / "a")})
    pairs = again.pairs(_ctx(tmp_path, tiny_model, "a3"))
    assert [(p.id, p.rejected) for p in pairs] == [(p.id, p.rejected) for p in reference]
    stats = again.stats()
    assert stats["pairs"] == 6 and "nonsimilar_after_1" in stats and stats["dataset"].endswith("pairs.jsonl")
    assert pairs[0].images[0].load().size == (48, 48)  # images written next to the data


def test_cache_key_covers_model_config_and_base_data(tiny_model, tmp_path: Path) -> None:
    entry = _entry("preference_source", "bdhs")
    a = entry.build({"base": BASE, **FAST})
    assert a.fingerprint() == entry.build({"base": BASE, **FAST, "batch_size": 7, "chunk_pairs": 3}).fingerprint()
    assert a.fingerprint() != entry.build({"base": BASE, **FAST, "rho_th": 0.98}).fingerprint()
    other_base = {"name": "shapes-pairs", "config": {**BASE["config"], "seed": 1}}
    assert a.fingerprint() != entry.build({"base": other_base, **FAST}).fingerprint()
    assert a.cache_key("m1", {"e": 1}) != a.cache_key("m2", {"e": 1})


def test_offline_outside_a_run_shows_the_generated_data_or_explains(tiny_model, tmp_path: Path) -> None:
    cfg = {"base": BASE, **FAST, "cache_dir": str(tmp_path / "cache")}
    src = _entry("preference_source", "bdhs").build(cfg)
    with pytest.raises(ValueError, match="mmalign data inspect"):
        src.pairs(_ctx(tmp_path, name="none"))
    made = src.pairs(_ctx(tmp_path, tiny_model, name="run"))
    shown = _entry("preference_source", "bdhs").build(cfg).pairs(_ctx(tmp_path, name="inspect"))  # e.g. `mmalign data inspect spec.json`
    assert [(p.id, p.rejected) for p in shown] == [(p.id, p.rejected) for p in made]
    other = _entry("preference_source", "bdhs").build({**cfg, "rho_th": 1.0})
    with pytest.raises(ValueError, match="no dataset generated with this config"):
        other.pairs(_ctx(tmp_path, name="other"))


def test_combine_extra_keeps_the_external_answer(tiny_model, tmp_path: Path) -> None:
    src = _entry("preference_source", "bdhs").build({"base": BASE, **FAST, "combine": "extra", "cache_dir": str(tmp_path / "c")})
    pairs = src.pairs(_ctx(tmp_path, tiny_model))
    base = list(_entry("preference_source", "shapes-pairs").build(BASE["config"]).pairs(None))
    assert [p.rejected for p in pairs] == [b.rejected for b in base]
    assert all(len(p.extra_rejected) == 1 and p.extra_rejected[0] != p.chosen for p in pairs)
    with pytest.raises(ValueError, match="combine='extra'"):
        _entry("preference_source", "bdhs").build({"base": {"name": "shapes-sft", "config": {"n_examples": 4}}, "combine": "extra"})


def test_config_errors_name_the_installed_choices() -> None:
    entry = _entry("preference_source", "bdhs")
    with pytest.raises(Exception, match="shapes-pairs"):
        entry.build({"base": {"name": "shapes-pair"}})
    with pytest.raises(Exception, match="bdhs"):  # no BDHS inside BDHS
        entry.build({"base": {"name": "bdhs-online", "config": {"base": BASE}}})
    with pytest.raises(Exception, match="minilm"):
        entry.build({"base": BASE, "embedder": {"name": "mini-lm"}})
    cfg = entry.config.model_validate({"base": BASE})
    assert cfg.base.name == "shapes:shapes-pairs" and cfg.embedder.name == "bdhs:minilm"
    assert cfg.base.config["n_pairs"] == 6 and "world" in cfg.base.config  # defaults written out
    assert (cfg.rho_th, cfg.n_bdhs, cfg.eps_s, cfg.noise.step, cfg.flip_probability) == (0.99, 5, 0.97, 500, 0.5)


def test_povid_distortion_pairs(tiny_model, tmp_path: Path) -> None:
    entry = _entry("preference_source", "povid-distortion")
    checked = check_source(entry, {"base": BASE}, _ctx(tmp_path, tiny_model))
    pairs = checked["pairs"]
    info = pairs[0].meta["povid"]
    assert set(info) >= {"handle", "ref_score", "ref_tokens"} and info["ref_score"] < 0
    text = entry.build({"base": BASE, "scoring": "text"}).pairs(_ctx(tmp_path, tiny_model, "t"))
    assert all(len(p.extra_rejected) == 1 for p in text)  # shapes-pairs has its own rejected answer: the distortion is extra


SPEC = {"name": "x", "model": {"name": "tiny-llava"}, "stages": []}


@pytest.mark.parametrize(
    "data, loss, fragment",
    [
        ({"name": "povid-distortion", "config": {"base": BASE}}, {"name": "dpo"}, "needs the loss 'povid-dpo'"),
        ({"name": "shapes-pairs"}, {"name": "povid-dpo"}, "needs the source 'povid-distortion'"),
        ({"name": "bdhs", "config": {"base": BASE, "combine": "extra"}}, {"name": "dpo"}, "avg-dpo"),
    ],
)
def test_run_checks_refuse_mismatched_pairs_and_losses(data: dict, loss: dict, fragment: str) -> None:
    spec = {**SPEC, "stages": [{"type": "align", "data": data, "loss": loss}]}
    validated, problems = check_spec(spec)
    assert validated is None and any(fragment in p.message for p in problems), [p.message for p in problems]
    ok = {**SPEC, "stages": [{"type": "align", "data": {"name": "bdhs", "config": {"base": BASE, "combine": "extra"}},
                              "loss": {"name": "avg-dpo"}}]}
    assert check_spec(ok)[0] is not None


def test_example_specs_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    specs = sorted(root.glob("bdhs-*.json"))
    assert len(specs) >= 2
    for path in specs:
        validated, problems = check_spec(json.loads(path.read_text()))
        assert validated is not None, (path.name, [str(p) for p in problems])


def test_online_bdhs_with_lora_adapters(tiny_model, tmp_path: Path) -> None:
    from mmalign_bdhs.masking import base_model

    tiny_model.enable_lora(4, 8.0, 0.0, r".*language_model.*\.(q_proj|v_proj)$")
    src = _entry("preference_source", "bdhs-online").build({"base": BASE, **FAST, "n_bdhs": 1})
    ctx = _ctx(tmp_path)
    with torch.no_grad():
        out, _ = src.prepare_batch(list(src.pairs(ctx))[:3], tiny_model, ctx, step=0)
    assert len(out) >= 2 and all(p.rejected for p in out)
    assert base_model(tiny_model).config.text_config._attn_implementation != "mmalign_bdhs_keymask"  # restored


def test_povid_loss_starts_at_zero_distortion_margin_and_has_gradients(tiny_model, tmp_path: Path) -> None:
    from mmalign_core.protocols import LossInputs

    pairs = _entry("preference_source", "povid-distortion").build({"base": BASE}).pairs(_ctx(tmp_path, tiny_model))[:4]
    loss_fn = _entry("loss", "povid-dpo").build({"beta": 0.1, "gamma": 0.5})
    reference = tiny_model.frozen_reference()
    policy = tiny_model.pair_logps(pairs)
    with torch.no_grad():
        ref = reference.pair_logps(pairs)
    out = loss_fn(LossInputs(policy=policy, reference=ref, pairs=pairs))
    # policy == reference: every log-ratio is 0, so both DPO terms are log 2
    assert out.metrics["rewards/distorted"] == pytest.approx(0.0, abs=1e-5)
    assert out.metrics["loss/distorted"] == pytest.approx(0.6931, abs=1e-3)
    assert out.loss.item() == pytest.approx(0.6931, abs=1e-3)
    out.loss.backward()
    grads = [p.grad for p in tiny_model.module.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    ignore = _entry("loss", "povid-dpo").build({"external": "ignore"})
    tiny_model.module.zero_grad()
    assert ignore(LossInputs(policy=tiny_model.pair_logps(pairs), reference=ref, pairs=pairs)).loss.item() == pytest.approx(0.6931, abs=1e-3)
