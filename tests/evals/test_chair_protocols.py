"""Object HalBench protocols: the CHAIR scripts' rules, pinned one by one, and their numbers on a crafted set.

The expected numbers below are what the reference scripts give for these descriptions -- Rohrbach et al.'s
``utils/chair.py`` (NLTK tokens, pattern 3.6 ``singularize``, ``data/synonyms.txt``) and RLHF-V's
``eval_gpt_obj_halbench.py`` rule path (``synonyms_refine.txt``, WordNet lemmas, ``CHAIRs_refine``) -- run
outside the test suite on the same inputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import write_jsonl, write_png


def mentions(text: str, protocol: str = "chair-original") -> list[tuple[str, str]]:
    from mmalign_evals.coco import extract_mentions

    return [(m.words, m.category) for m in extract_mentions(text, protocol)]


# ------------------------------------------------------------------------------ rules, one by one
@pytest.mark.parametrize("protocol", ["chair-original", "rlhf-v"])
def test_possessives_split_off(protocol: str) -> None:
    assert mentions("The dog's bowl.", protocol) == [("dog", "dog"), ("bowl", "bowl")]
    assert mentions("A man’s hat", protocol) == [("man", "person")]


@pytest.mark.parametrize("protocol", ["chair-original", "rlhf-v"])
def test_hyphenated_words_stay_whole(protocol: str) -> None:
    assert mentions("A horse-drawn wagon.", protocol) == []  # neither a horse nor a car
    assert mentions("A dog-friendly cafe with a dog.", protocol) == [("dog", "dog")]


@pytest.mark.parametrize("protocol", ["chair-original", "rlhf-v"])
def test_the_seat_of_a_toilet_is_no_chair(protocol: str) -> None:
    assert mentions("The seat of the toilet is up.", protocol) == [("toilet", "toilet")]
    assert mentions("A toilet seat.", protocol) == [("toilet", "toilet")]
    assert mentions("A seat by the window.", protocol) == [("seat", "chair")]


@pytest.mark.parametrize("protocol", ["chair-original", "rlhf-v"])
def test_two_word_objects_count_once(protocol: str) -> None:
    assert mentions("A flat screen tv.", protocol) == [("tv", "tv")]
    assert mentions("Two double decker buses.", protocol) == [("bus", "bus")]
    assert mentions("A hot dog and a teddy bear.", protocol) == [("hot dog", "hot dog"), ("teddy bear", "teddy bear")]
    assert mentions("Baby elephants and a passenger train on train tracks.", protocol) == [("elephant", "elephant"), ("train", "train")]
    assert mentions("A bow tie.", protocol) == [("tie", "tie")]


@pytest.mark.parametrize("protocol", ["chair-original", "rlhf-v"])
def test_synonym_table_is_the_reference_table(protocol: str) -> None:
    # Words the old hand-written table counted and the reference tables do not.
    for word in ("family", "crowd", "novel", "meters", "bat", "wagon", "gondola", "mug"):
        assert mentions(f"A {word}.", protocol) == [], word
    # Words the reference tables count and the old table missed.
    assert mentions("A notebook, a bow, a container and a panda.", protocol) == [
        ("notebook", "laptop"), ("bow", "tie"), ("container", "bowl"), ("panda", "bear")]


def test_the_original_scripts_quirks_are_kept() -> None:
    # pattern's singularize turns "bus" into "bu" and "glass" into "glas" (hence the script's "wine glas" rule).
    assert mentions("A bus.") == [] and mentions("Two buses.") == [("bus", "bus")]
    assert mentions("A wine glass and two wine glasses.") == [("wine glass", "wine glass")] * 2
    # "scooter,  motor bike" in the original table makes the key " motor bike", which no token matches.
    assert mentions("A motor bike.") == []
    assert mentions("A motor bike.", "rlhf-v") == [("motor bike", "motorcycle")]
    assert mentions("A brother and a pedestrian.") == [] and mentions("A brother and a pedestrian.", "rlhf-v") == [
        ("brother", "person"), ("pedestrian", "person")]


def test_tokens_follow_nltk_word_tokenize() -> None:
    from mmalign_evals.chair_text import treebank_tokens

    assert treebank_tokens("A dog's bone, two horse-drawn wagons (and a cat).") == [
        "a", "dog", "'s", "bone", ",", "two", "horse-drawn", "wagons", "(", "and", "a", "cat", ")", "."]
    assert treebank_tokens("Dogs' toys; a cat: yes. It isn't 3.5 m.") == [
        "dogs", "'", "toys", ";", "a", "cat", ":", "yes", ".", "it", "is", "n't", "3.5", "m", "."]
    assert treebank_tokens("**Dogs**: 1,000 dogs/cats... I cannot") == [
        "*", "*", "dogs", "*", "*", ":", "1,000", "dogs/cats", "...", "i", "can", "not"]


def test_pattern_singularizer_matches_pattern() -> None:
    from mmalign_evals.chair_text import pattern_singularizer

    s = pattern_singularizer()
    expected = {"dogs": "dog", "people": "person", "women": "woman", "children": "child", "knives": "knife",
                "geese": "goose", "ponies": "pony", "mice": "mouse", "sheep": "sheep", "luggage": "luggage",
                "scissors": "scissors", "skis": "ski", "buses": "bus", "bus": "bu", "glass": "glas", "ties": "ty",
                "doggies": "doggies", "couches": "couch", "dogs'": "dog's", "mothers-in-law": "mother-in-law",
                "horse-drawn": "horse-drawn", "leaves": "leaf", "calves": "calf", "oxen": "ox"}
    assert {w: s(w) for w in expected} == expected


def test_chair_s_denominators() -> None:
    from mmalign_evals.chair_protocols import chair_protocol

    # 2 of 4 descriptions hallucinate; 3 name an object.
    assert chair_protocol("chair-original").chair_s(2, 4, 3) == 0.5
    assert chair_protocol("rlhf-v").chair_s(2, 4, 3) == pytest.approx(2 / 3)
    assert chair_protocol("rlhf-v").chair_s(0, 4, 0) == 0.0


# ------------------------------------------------------------------- the evaluator on a crafted set
CRAFTED = [
    # (instances, reference caption, description)
    (["person", "dog"], "A man and his dog in a bathroom next to a toilet.",
     "A man walks his dog's leash past a horse-drawn wagon. The seat of the toilet is up."),
    (["tv", "couch"], "", "A flat screen tv hangs above a couch, and two double decker buses pass by the window."),
    (["person", "dining table", "book"], "", "The family sits at a table; a crowd watches. A novel, a mug and a baseball bat lie there."),
    (["laptop", "tie", "bowl", "teddy bear"], "", "A notebook and a bow on a desk, next to a container and a toy panda."),
    (["wine glass", "cell phone", "toilet"], "", "Two wine glasses, a cell phone and a pair of skis near the toilet seat."),
    ([], "People on the sand under umbrellas.", "A beautiful sunny day at the beach."),
    (["elephant", "train"], "", "Baby elephants follow adult elephants; a passenger train runs on train tracks by a bus."),
    (["person", "bird", "motorcycle"], "", "Women and children feed geese while people ride motorbikes and bicycles."),
]
CATEGORY_IDS = {name: i + 1 for i, name in enumerate(
    ["person", "dog", "tv", "couch", "dining table", "book", "laptop", "tie", "bowl", "teddy bear", "wine glass",
     "cell phone", "toilet", "elephant", "train", "bird", "motorcycle", "umbrella"])}

# Per description, the reference scripts' (word, category) mentions.
ORIGINAL_MENTIONS = [
    [("man", "person"), ("dog", "dog"), ("toilet", "toilet")],
    [("tv", "tv"), ("couch", "couch"), ("bus", "bus")],
    [("table", "dining table"), ("baseball bat", "baseball bat")],
    [("notebook", "laptop"), ("bow", "tie"), ("desk", "dining table"), ("container", "bowl"), ("panda", "bear")],
    [("wine glass", "wine glass"), ("cell phone", "cell phone"), ("ski", "skis"), ("toilet", "toilet")],
    [],
    [("elephant", "elephant"), ("elephant", "elephant"), ("train", "train")],
    [("woman", "person"), ("child", "person"), ("goose", "bird"), ("person", "person"), ("motorbike", "motorcycle"), ("bicycle", "bicycle")],
]
RLHFV_MENTIONS = [list(m) for m in ORIGINAL_MENTIONS]
RLHFV_MENTIONS[6] = ORIGINAL_MENTIONS[6] + [("bus", "bus")]  # WordNet keeps "bus"; pattern made it "bu"
RLHFV_MENTIONS[7] = [("people", "person") if w == "person" else (w, c) for w, c in ORIGINAL_MENTIONS[7]]
ORIGINAL_HALLUCINATED = [[], ["bus"], ["baseball bat"], ["bear", "dining table"], ["skis"], [], [], ["bicycle"]]
RLHFV_HALLUCINATED = [*ORIGINAL_HALLUCINATED[:6], ["bus"], ORIGINAL_HALLUCINATED[7]]


def write_crafted(root: Path) -> Path:
    lines, images, instances, captions = [], [], [], []
    for k, (cats, caption, _) in enumerate(CRAFTED):
        image_id = 1000 + k
        lines.append({"image_id": image_id, "question": f"Describe image {k} in detail.", "org_idx": k})
        write_png(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", k)
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        instances += [{"id": image_id * 10 + j, "image_id": image_id, "category_id": CATEGORY_IDS[c]} for j, c in enumerate(cats)]
        if caption:
            captions.append({"id": image_id, "image_id": image_id, "caption": caption})
    write_jsonl(root / "obj_halbench_300_with_image.jsonl", lines)
    categories = [{"id": i, "name": name} for name, i in CATEGORY_IDS.items()]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps({"images": images, "annotations": instances, "categories": categories}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return root


def describing_model() -> ScriptedModel:
    return ScriptedModel(lambda request: CRAFTED[int(request.prompt.split()[2])][2])


@pytest.mark.parametrize("protocol, expected_mentions, hallucinated, chair_s, chair_i", [
    (None, ORIGINAL_MENTIONS, ORIGINAL_HALLUCINATED, 5 / 8, 6 / 26),      # chair.py: CHAIRs, CHAIRi
    ("chair-original", ORIGINAL_MENTIONS, ORIGINAL_HALLUCINATED, 5 / 8, 6 / 26),
    ("rlhf-v", RLHFV_MENTIONS, RLHFV_HALLUCINATED, 6 / 7, 7 / 27),         # RLHF-V: CHAIRs_refine (7 of 8 name objects), CHAIRi
])
def test_protocols_give_the_reference_numbers(evals, ctx, tmp_path: Path, protocol, expected_mentions, hallucinated, chair_s, chair_i) -> None:
    root = write_crafted(tmp_path / "objhal")
    config = {"data_dir": str(root), **({"protocol": protocol} if protocol else {})}
    result = check_evaluator(evals.resolve("evaluator", "object-halbench"), describing_model(), config, ctx)
    assert [[tuple(m) for m in r["mentioned"]] for r in result.records] == expected_mentions
    assert [r["hallucinated"] for r in result.records] == hallucinated
    # Ground truth: instances plus the objects of the reference captions (toilet; person and umbrella).
    assert result.records[0]["ground_truth"] == ["dog", "person", "toilet"] and result.records[5]["ground_truth"] == ["person", "umbrella"]
    assert result.metrics["chair_s"] == pytest.approx(chair_s)
    assert result.metrics["chair_i"] == pytest.approx(chair_i)
    assert result.metrics["recall"] == pytest.approx(17 / 22)  # obj_rec of both scripts
    d = result.details
    assert d["protocol"]["name"] == (protocol or "chair-original")
    assert d["descriptions_naming_objects"] == 7 and d["descriptions_with_hallucination"] == (5 if protocol != "rlhf-v" else 6)


def test_unknown_protocol_is_a_config_error(evals) -> None:
    with pytest.raises(Exception, match="chair-original"):
        evals.resolve("evaluator", "object-halbench").config.model_validate({"protocol": "chair"})
