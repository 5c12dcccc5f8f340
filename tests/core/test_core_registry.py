"""Name resolution and its error messages."""
from __future__ import annotations

import pytest

from mmalign_core.errors import UnknownComponentError
from mmalign_core.known import parse_known
from mmalign_core.registry import PluginInfo, Registry

KNOWN = parse_known(
    {
        "plugins": {
            "gpo": {"distribution": "mmalign-gpo", "entry_point": "gpo", "status": "planned", "summary": "More losses.",
                    "components": {"loss": ["ipo", "slic"]}},
            "evals": {"distribution": "mmalign-evals", "entry_point": "evals", "status": "official", "summary": "Benchmarks.",
                      "components": {"evaluator": ["pope"]}},
        }
    }
)


def _registry(toy, *infos, known=KNOWN):
    return Registry(toy.entries(), [*toy.infos(), *infos], known)


def test_bare_and_qualified_names(toy):
    assert toy.resolve("loss", "dpo").qualified_name == "toy:dpo"
    assert toy.resolve("loss", "toy:dpo") == toy.resolve("loss", "dpo")
    assert toy.registry.get("loss", "nope") is None


def test_unknown_name_suggests_and_lists(toy):
    with pytest.raises(UnknownComponentError) as err:
        toy.resolve("loss", "dpoo")
    text = str(err.value)
    assert "Unknown loss 'dpoo'. Did you mean 'dpo'?" in text
    assert "Available losses: dpo, sft." in text


def test_name_of_another_kind_is_pointed_out(toy):
    with pytest.raises(UnknownComponentError, match="'dpo' is a loss, not an evaluator"):
        toy.resolve("evaluator", "dpo")


def test_unknown_plugin_prefix(toy):
    with pytest.raises(UnknownComponentError) as err:
        toy.resolve("loss", "tyo:dpo")
    text = str(err.value)
    assert "Unknown plugin 'tyo'" in text and "Did you mean 'toy'?" in text and "'toy:dpo'" in text


def test_plugin_without_that_component(toy):
    with pytest.raises(UnknownComponentError, match="Plugin 'toy' provides no loss 'dpp'. Did you mean 'dpo'?"):
        toy.resolve("loss", "toy:dpp")


def test_broken_plugin_known_to_provide_the_name(toy):
    broken = PluginInfo(name="gpo", status="broken", distribution="mmalign-gpo", version="0.3.0", stage="import",
                        error="ImportError: needs 'frobnicate'")
    registry = _registry(toy, broken)
    with pytest.raises(UnknownComponentError) as err:
        registry.resolve("loss", "ipo")
    text = str(err.value)
    assert "plugin 'gpo' (mmalign-gpo 0.3.0), which failed to load (import): ImportError: needs 'frobnicate'" in text
    assert err.value.plugins == ("gpo",)


def test_any_broken_plugin_is_mentioned_for_unknown_names(toy):
    broken = PluginInfo(name="mystery", status="broken", distribution="mmalign-mystery", version="1.0", error="SyntaxError: bad")
    with pytest.raises(UnknownComponentError) as err:
        _registry(toy, broken).resolve("evaluator", "whatever")
    assert "1 plugin failed to load and might provide it" in str(err.value)
    assert "mystery (mmalign-mystery 1.0): SyntaxError: bad" in str(err.value)
    assert err.value.plugins == ()  # only a known provider is named as the owner


def test_known_but_not_installed(toy):
    registry = _registry(toy)
    with pytest.raises(UnknownComponentError, match=r"provided by plugin 'evals' \(pip install mmalign-evals\), which is not installed"):
        registry.resolve("evaluator", "pope")
    with pytest.raises(UnknownComponentError, match="planned but not yet released"):
        registry.resolve("loss", "slic")
    with pytest.raises(UnknownComponentError, match="Did you mean 'pope'\\? It is provided by plugin 'evals'"):
        registry.resolve("evaluator", "popee")


def test_disabled_provider(toy):
    disabled = PluginInfo(name="gpo", status="disabled", distribution="mmalign-gpo", version="0.3.0")
    with pytest.raises(UnknownComponentError, match="which is disabled by MMALIGN_DISABLE_PLUGINS"):
        _registry(toy, disabled).resolve("loss", "ipo")


def test_no_component_of_a_kind(toy):
    with pytest.raises(UnknownComponentError, match="No judge is installed"):
        toy.resolve("judge", "any")


def test_unknown_kind_is_a_programming_error(toy):
    with pytest.raises(ValueError, match="unknown component kind"):
        toy.resolve("optimizer", "adam")
