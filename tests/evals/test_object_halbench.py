"""Object HalBench: CHAIR and object recall for a known caption set; the synonym table; judge extraction."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import OBJHAL_ITEMS, objhal_descriptions, scripted_judge, write_object_halbench


def describing_model() -> ScriptedModel:
    """Answers each image with its scripted description (images are told apart by their size-40 colour)."""
    from evals_data import PALETTE

    by_colour = {PALETTE[n % len(PALETTE)]: desc for n, (_, _, _, desc) in enumerate(OBJHAL_ITEMS)}
    return ScriptedModel(lambda request: by_colour[request.images[0].load().getpixel((20, 20))])


@pytest.mark.parametrize("embed", [True, False])
def test_chair_and_recall_for_a_known_caption_set(evals, ctx, tmp_path: Path, embed: bool) -> None:
    root = write_object_halbench(tmp_path / "objhal", embed_images=embed)
    model = describing_model()
    result = check_evaluator(evals.resolve("evaluator", "object-halbench"), model, {"data_dir": str(root)}, ctx)
    # Ground truth (instances + caption objects): {person, dog, couch}, {car, bus}, {pizza, dining table}.
    # Mentions: woman/puppy/cat -> 1 of 3 hallucinated; cars/car/traffic light -> 1 of 3; pizza -> 0 of 1.
    assert result.metrics["chair_i"] == pytest.approx(2 / 7)
    assert result.metrics["chair_s"] == pytest.approx(2 / 3)
    # Recalled: {person, dog} of 3, {car} of 2, {pizza} of 2.
    assert result.metrics["recall"] == pytest.approx(4 / 7)
    assert result.metrics["objects_per_caption"] == pytest.approx((3 + 2 + 1) / 3)
    assert result.higher_is_better == {"recall": True, "chair_s": False, "chair_i": False, "objects_per_caption": True}
    first = result.records[0]
    assert first["ground_truth"] == ["couch", "dog", "person"] and first["hallucinated"] == ["cat"]
    assert first["mentioned"] == [["woman", "person"], ["puppy", "dog"], ["cat", "cat"]]
    assert result.details["image_ids"] == [101, 202, 303] and result.details["prompt_template"] == "<each sample's question>"
    assert result.details["example_prompt"] == "Describe this image in detail."


def test_unique_counting_and_instances_only(evals, ctx, tmp_path: Path) -> None:
    root = write_object_halbench(tmp_path / "objhal")
    entry = evals.resolve("evaluator", "object-halbench")
    unique = check_evaluator(entry, describing_model(), {"data_dir": str(root), "chair_i_counts": "unique"}, ctx)
    assert unique.metrics["chair_i"] == pytest.approx(2 / 6)  # {person, dog, cat}, {car, traffic light}, {pizza}
    instances = check_evaluator(entry, describing_model(), {"data_dir": str(root), "caption_objects": False}, ctx)
    # Without caption objects the table is not ground truth for image 303, nor the couch for 101.
    assert instances.metrics["recall"] == pytest.approx((2 + 1 + 1) / (2 + 2 + 1))


def test_judge_extraction_maps_the_listed_objects(evals, ctx, tmp_path: Path) -> None:
    root = write_object_halbench(tmp_path / "objhal")
    descriptions = objhal_descriptions()
    # The judge lists objects (plural, synonyms); they go through the same table.
    replies = {descriptions[101]: "women, puppies, frisbee", descriptions[202]: "cars, traffic lights", descriptions[303]: "none"}
    config = {"data_dir": str(root), "extraction": "judge", "judge": scripted_judge(replies)}
    result = check_evaluator(evals.resolve("evaluator", "object-halbench"), describing_model(), config, ctx)
    assert result.records[0]["mentioned"] == [["woman", "person"], ["puppy", "dog"], ["frisbee", "frisbee"]]
    assert result.records[2]["mentioned"] == []
    # Hallucinated: frisbee (1 of 3), traffic light (1 of 2); recalled 2 + 1 + 0 of 3 + 2 + 2.
    assert result.metrics["chair_i"] == pytest.approx(2 / 5) and result.metrics["recall"] == pytest.approx(3 / 7)
    assert "judge" in result.details and "{caption}" in result.details["judge"]["prompt_template"]


def test_synonym_table() -> None:
    from mmalign_evals.coco import COCO_CATEGORIES, extract_mentions, extract_objects

    assert len(COCO_CATEGORIES) == 80 == len(set(COCO_CATEGORIES))
    assert extract_objects("A hot dog, a teddy bear and a bow tie on a toilet seat.") == {"hot dog", "teddy bear", "tie", "toilet"}
    assert extract_objects("A baby elephant next to a passenger train.") == {"elephant", "train"}
    assert extract_objects("Two men ride motorbikes past parked SUVs and a fire hydrant.") == {"person", "motorcycle", "car", "fire hydrant"}
    assert extract_objects("A laptop, a cellphone and a remote on a sofa.") == {"laptop", "cell phone", "remote", "couch"}
    assert [m.words for m in extract_mentions("Dogs, a dog and a puppy.")] == ["dog", "dog", "puppy"]


def test_missing_annotations_are_named(evals, ctx, tmp_path: Path) -> None:
    from mmalign_evals.common import BenchmarkDataError

    root = write_object_halbench(tmp_path / "objhal")
    (root / "annotations" / "captions_val2014.json").unlink()
    evaluator = evals.resolve("evaluator", "object-halbench").build({"data_dir": str(root)})
    with pytest.raises(BenchmarkDataError, match="captions_val2014.json"):
        evaluator.evaluate(describing_model(), ctx)
