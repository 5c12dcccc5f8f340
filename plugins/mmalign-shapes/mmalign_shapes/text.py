"""Text of the shapes world: captions, answers and the parsers that read model output back.

Everything here is plain Python (``re`` only), so the config module may import it
for name validation without pulling in numpy or PIL.

Caption format (what the sources train on and the parsers invert)::

    a red circle.
    a red circle and a blue square.
    a red circle, a green triangle and a blue square.

Objects are listed in the world's canonical order (see :class:`mmalign_shapes.world.ShapesWorld`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Words the object parser skips between a quantifier/colour and the shape noun.
ARTICLES = frozenset({"a", "an", "the", "any", "some", "another", "single", "several", "many", *NUMBER_WORDS})
FILLERS = frozenset(
    {"small", "smaller", "large", "larger", "big", "bigger", "tiny", "little", "bright", "dark", "light",
     "pale", "coloured", "colored", "solid", "filled", "shaped", "other"}
)
NEGATORS = frozenset({"no", "not", "without", "nor", "never", "none"})
CONNECTORS = frozenset({"and", "or", ","})

# Words that may not be used as colour or shape names (the parser gives them a role).
RESERVED_WORDS = ARTICLES | FILLERS | NEGATORS | frozenset({"and", "or", "yes", "is", "are", "there", "image", "shape", "shapes"})

_TOKEN = re.compile(r"[a-z]+|[,;:.!?]")
_YES_NO = re.compile(r"\b(yes|yeah|yep|no|nope|not)\b")


class ShapeObject(NamedTuple):
    """One kind of object in the world: a colour and a shape (e.g. ``ShapeObject("red", "circle")``)."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        """The object's name as written in captions and questions: ``"red circle"``."""
        return f"{self.colour} {self.shape}"

    def __str__(self) -> str:
        return self.name


def plural(noun: str) -> str:
    """English plural of a shape noun (``circle`` -> ``circles``, ``cross`` -> ``crosses``)."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def article(word: str) -> str:
    """Indefinite article for ``word`` (``an`` before a vowel letter)."""
    return "an" if word[:1] in "aeiou" else "a"


def object_phrase(obj: ShapeObject) -> str:
    """``"a red circle"`` / ``"an orange star"``."""
    return f"{article(obj.colour)} {obj.colour} {obj.shape}"


def make_caption(objects: Sequence[ShapeObject]) -> str:
    """The caption listing ``objects`` in the order given (callers pass canonical order).

    >>> make_caption([ShapeObject("red", "circle"), ShapeObject("blue", "square")])
    'a red circle and a blue square.'
    """
    if not objects:
        raise ValueError("a caption needs at least one object")
    phrases = [object_phrase(o) for o in objects]
    if len(phrases) == 1:
        body = phrases[0]
    else:
        body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return body + "."


def count_answer(n: int) -> str:
    """Answer to the counting question: ``2`` -> ``"Two."``."""
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"cannot spell a count of {n}")
    return NUMBER_WORDS[n].capitalize() + "."


def question(template: str, obj: ShapeObject) -> str:
    """Fill a yes/no question template such as ``"Is there a {object} in the image?"``."""
    return template.format(object=obj.name)


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("n't", " not")
    return _TOKEN.findall(text)


def parse_yes_no(text: str) -> bool | None:
    """Read a yes/no answer from free text.

    The first of the words ``yes``/``yeah``/``yep`` (True) or ``no``/``nope``/``not``
    (False, ``n't`` counts as ``not``) decides; text with none of them gives
    ``None``. So ``"Yes."`` and ``"Yes, there is a red circle."`` are True;
    ``"No."``, ``"There is no red circle."`` and ``"It isn't there."`` are False.
    """
    m = _YES_NO.search(text.lower().replace("n't", " not"))
    if m is None:
        return None
    return m.group(1) in ("yes", "yeah", "yep")


@dataclass(frozen=True)
class Mention:
    """One (colour, shape) mention found in a text; ``negated`` for "no red circle" and the like."""

    obj: ShapeObject
    negated: bool
    position: int  # token index of the shape noun


class CaptionParser:
    """Finds (colour, shape) mentions in free text, for a given vocabulary.

    Rules, applied on lower-cased word tokens:

    * a colour word, optionally followed by articles/quantifiers or size words
      ("small", "coloured", ...), then a shape noun in singular or plural, is a
      mention: "a red circle", "two red circles", "a red, small circle";
    * colours joined by "and"/"or"/"," before one shape noun share it:
      "red and blue squares" mentions a red square and a blue square;
    * a mention whose colour group is preceded (over articles and size words) by
      "no", "not", "without", "nor", "never" or "none" is negated and is not an
      object claim: "there is no blue square";
    * any other word between a colour and a shape breaks the link, so a shape
      noun with no colour ("a circle") or a dangling colour mentions nothing.

    Phrasings such as "a circle that is red" are not recognised.
    """

    def __init__(self, colours: Iterable[str], shapes: Iterable[str]):
        self.colours = tuple(colours)
        self.shapes = tuple(shapes)
        self._colour_set = frozenset(self.colours)
        self._shape_of: dict[str, str] = {}
        for s in self.shapes:
            self._shape_of[s] = s
            self._shape_of[plural(s)] = s

    def mentions(self, text: str) -> list[Mention]:
        """Every mention in order of appearance, negated ones included."""
        tokens = _tokens(text)
        found: list[Mention] = []
        pending: list[str] = []
        negated = False
        after_connector = False
        for i, tok in enumerate(tokens):
            if tok in self._colour_set:
                if pending and after_connector:
                    pending.append(tok)
                else:
                    pending = [tok]
                    negated = self._negated(tokens, i)
                after_connector = False
            elif tok in self._shape_of:
                shape = self._shape_of[tok]
                for colour in pending:
                    found.append(Mention(ShapeObject(colour, shape), negated, i))
                pending = []
                after_connector = False
            elif tok in CONNECTORS:
                after_connector = bool(pending)
            elif tok in ARTICLES or tok in FILLERS:
                continue
            else:
                pending = []
                after_connector = False
        return found

    def parse(self, text: str) -> list[ShapeObject]:
        """The distinct objects ``text`` claims are present, in order of first mention."""
        seen: dict[ShapeObject, None] = {}
        for m in self.mentions(text):
            if not m.negated:
                seen.setdefault(m.obj, None)
        return list(seen)

    @staticmethod
    def _negated(tokens: list[str], start: int) -> bool:
        j = start - 1
        while j >= 0 and (tokens[j] in ARTICLES or tokens[j] in FILLERS):
            j -= 1
        return j >= 0 and tokens[j] in NEGATORS


def parse_objects(text: str, colours: Iterable[str], shapes: Iterable[str]) -> list[ShapeObject]:
    """Shortcut for ``CaptionParser(colours, shapes).parse(text)``."""
    return CaptionParser(colours, shapes).parse(text)
