"""Captions and the parsers that read model output."""
from __future__ import annotations

import itertools

import pytest

from mmalign_shapes.text import CaptionParser, ShapeObject, count_answer, make_caption, parse_objects, parse_yes_no, plural
from mmalign_shapes.world import ShapesWorld

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "diamond")
R, B, G, Y = ShapeObject("red", "circle"), ShapeObject("blue", "square"), ShapeObject("green", "triangle"), ShapeObject("yellow", "diamond")


def parse(text: str) -> list[ShapeObject]:
    return parse_objects(text, COLOURS, SHAPES)


def test_caption_formats():
    assert make_caption([R]) == "a red circle."
    assert make_caption([R, B]) == "a red circle and a blue square."
    assert make_caption([R, G, B]) == "a red circle, a green triangle and a blue square."
    with pytest.raises(ValueError):
        make_caption([])


def test_counts_and_plurals():
    assert count_answer(1) == "One." and count_answer(3) == "Three."
    assert plural("circle") == "circles" and plural("cross") == "crosses"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red circle.", [R]),
        ("A Red Circle and a BLUE square.", [R, B]),
        ("a red circle, a green triangle and a blue square.", [R, G, B]),
        ("There is a red circle in the image.", [R]),
        ("two red circles and three blue squares", [R, B]),
        ("red circles", [R]),
        ("a small red circle next to a large blue square", [R, B]),
        ("a red, small circle", [R]),
        ("a red-coloured circle", [R]),
        ("red and blue squares", [ShapeObject("red", "square"), B]),
        ("a red or a blue circle", [R, ShapeObject("blue", "circle")]),
        ("red, green and yellow diamonds", [ShapeObject("red", "diamond"), ShapeObject("green", "diamond"), Y]),
        ("a red circle and a red circle.", [R]),
        ("a red circle; a blue square!", [R, B]),
        ("a red circle.a blue square.", [R, B]),
        ("a circle and a square.", []),
        ("the red one is a circle", []),
        ("a red", []),
        ("There is no blue square.", []),
        ("a red circle and no blue square.", [R]),
        ("a red circle but not a blue square", [R]),
        ("there isn't a blue square, only a red circle", [R]),
        ("no red or blue squares", []),
        ("a red circle without a green triangle", [R]),
        ("a purple circle and a red star", []),
        ("", []),
    ],
)
def test_parser_phrasings(text, expected):
    assert parse(text) == expected


def test_mentions_keep_negated_ones():
    mentions = CaptionParser(COLOURS, SHAPES).mentions("a red circle and no blue square")
    assert [(m.obj, m.negated) for m in mentions] == [(R, False), (B, True)]


def test_parser_round_trips_every_caption():
    world = ShapesWorld()
    n = 0
    for k in range(1, world.config.max_objects + 1):
        for combo in itertools.combinations(world.objects, k):
            caption = world.caption(combo)
            assert world.parse(caption) == list(combo), caption
            n += 1
    assert n == 16 + 120 + 560


def test_parser_round_trips_other_vocabularies():
    colours, shapes = ("orange", "purple", "white"), ("star", "cross", "hexagon")
    parser = CaptionParser(colours, shapes)
    objects = [ShapeObject(c, s) for c in colours for s in shapes]
    for combo in itertools.combinations(objects, 3):
        assert parser.parse(make_caption(combo)) == list(combo)
    assert parser.parse("two orange crosses") == [ShapeObject("orange", "cross")]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", True),
        ("yes", True),
        ("Yes, there is a red circle.", True),
        ("Yeah", True),
        ("No.", False),
        ("no", False),
        ("Nope.", False),
        ("There is no red circle.", False),
        ("It isn't there.", False),
        ("a red circle.", None),
        ("", None),
        ("Noted", None),
    ],
)
def test_yes_no_parser(text, expected):
    assert parse_yes_no(text) is expected
