"""VQA answer normalisation and accuracy: the reference rules and mmalign's tolerant variants.

Reference (EvalAI / lmms-eval, used by the ``evalai`` and ``lmms-eval`` protocols):

* :func:`normalize_evalai` is EvalAI's answer processor as TextVQA's evaluation (mmf's
  ``EvalAIAnswerProcessor``, LLaVA's ``m4c_evaluator.py``, lmms-eval) runs it: lower case; commas and question
  marks dropped and ``'s`` split off; newlines and tabs to spaces; punctuation removed where a space is next to
  it anywhere in the answer, else turned into a space; periods not followed by a digit removed -- at most 32 of
  them (the reference passes ``re.UNICODE`` as the ``count`` of ``re.sub``); number words to digits; articles
  dropped; then the official contraction table (``data/evalai_contractions.json``, shipped as is).
* :func:`vqa_accuracy_evalai`: for each of the n reference answers, min(#other references equal to the
  prediction / 3, 1), averaged over the n -- so a single reference scores 0 (lmms-eval's loop).
* :func:`exact_match_lmms`: lmms-eval's ``exact_match`` with ``ignore_case`` and ``ignore_punctuation`` (GQA):
  lower case, ASCII punctuation deleted, then equality -- white space is neither stripped nor collapsed.

Tolerant (mmalign's former rules, the ``tolerant`` protocol and generic JSONL data):

:func:`normalize_vqa` applies the standard VQA evaluation rules (as in the
official VQA evaluation code and EvalAI's answer processor, which TextVQA and
lmms-eval use): lower case; commas and question marks dropped; punctuation
removed (or turned into a space when it joins two words); a period removed
unless a digit follows; number words ``none``, ``zero`` ... ``ten`` written as
digits; the articles ``a``, ``an``, ``the`` dropped; and contractions written
without their apostrophe restored (``dont`` -> ``don't``). The contraction
table below is written for mmalign from the list of standard English
contractions; it deliberately leaves out forms that are also ordinary words
(``well``, ``were``, ``its``, ``shed``, ``ill``...), as the official table does.

:func:`vqa_accuracy` is the VQA accuracy of one prediction: for each of the
n reference answers, ``min(#other references equal to the prediction / 3, 1)``,
averaged over the n leave-one-out subsets (10 choose 9 for TextVQA's ten
annotators). With fewer than two references it is exact match.
"""
from __future__ import annotations

import itertools
import json
import re
import string
from functools import lru_cache
from typing import Sequence

from .chair_text import data_text

_CANONICAL_CONTRACTIONS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd he'd've
he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've
needn't not've o'clock oughtn't shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll
somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd
there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't
would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_table() -> dict[str, str]:
    """Every spelling with one or more apostrophes left out -> the canonical contraction."""
    table: dict[str, str] = {}
    for canonical in _CANONICAL_CONTRACTIONS:
        positions = [i for i, c in enumerate(canonical) if c == "'"]
        for r in range(1, len(positions) + 1):
            for dropped in itertools.combinations(positions, r):
                variant = "".join(c for i, c in enumerate(canonical) if i not in dropped)
                table.setdefault(variant, canonical)
    return table


CONTRACTIONS: dict[str, str] = _contraction_table()
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")


def _punctuation(text: str) -> str:
    out = text
    squeeze = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        # Punctuation next to a space (or in a number like 1,000) is dropped; inside a word it becomes a space.
        if squeeze or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_vqa(answer: str) -> str:
    """The standard VQA answer normalisation (see the module docstring)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_lower_punct(answer: str) -> str:
    """Lower case, every ASCII punctuation character removed, whitespace collapsed (lmms-eval's GQA exact match)."""
    return " ".join(answer.lower().translate(_PUNCT_TABLE).split())


def normalize_none(answer: str) -> str:
    """Only surrounding whitespace removed."""
    return answer.strip()


NORMALIZERS = {"vqa": normalize_vqa, "lower-punct": normalize_lower_punct, "none": normalize_none}


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the annotators' answers (see the module docstring)."""
    pred = normalize_vqa(prediction)
    refs = [normalize_vqa(r) for r in references]
    if not refs:
        return 0.0
    if len(refs) < 2:
        return float(pred == refs[0])
    scores = []
    for i in range(len(refs)):
        agreeing = sum(1 for j, r in enumerate(refs) if j != i and r == pred)
        scores.append(min(1.0, agreeing / 3.0))
    return sum(scores) / len(scores)


def exact_match(prediction: str, references: Sequence[str], normalize: str = "vqa") -> float:
    """1.0 when the normalised prediction equals any normalised reference answer."""
    norm = NORMALIZERS[normalize]
    pred = norm(prediction)
    return float(any(pred == norm(r) for r in references))


# ------------------------------------------------------------------------------ reference rules
#: How many periods the reference strips at most (``re.UNICODE == 32`` passed as ``count``).
EVALAI_PERIOD_LIMIT = int(re.UNICODE)


@lru_cache(maxsize=1)
def evalai_contractions() -> dict[str, str]:
    """The official contraction table (``data/evalai_contractions.json``)."""
    return dict(json.loads(data_text("evalai_contractions.json"))["contractions"])


def _evalai_punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        out = out.replace(p, "" if (p + " ") in text or (" " + p) in text else " ")
    return _PERIOD.sub("", out, count=EVALAI_PERIOD_LIMIT)


def normalize_evalai(answer: str) -> str:
    """EvalAI's VQA answer processor (see the module docstring)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _evalai_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    table = evalai_contractions()
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(table.get(w, w) for w in words if w not in ARTICLES)


def vqa_accuracy_evalai(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy as TextVQA's evaluation computes it (0 without references; 0 with a single one)."""
    pred = normalize_evalai(prediction)
    refs = [normalize_evalai(r) for r in references]
    if not refs:
        return 0.0
    agreeing = sum(1 for r in refs if r == pred)
    # Leaving out reference i leaves agreeing - [refs[i] == pred] matches.
    return sum(min(1.0, (agreeing - (r == pred)) / 3.0) for r in refs) / len(refs)


def exact_match_evalai(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_evalai(prediction)
    return float(any(pred == normalize_evalai(r) for r in references))


def normalize_lmms_exact(answer: str) -> str:
    """lmms-eval's ``ignore_case`` + ``ignore_punctuation``: lower case, ASCII punctuation deleted, nothing else."""
    return answer.lower().translate(_PUNCT_TABLE)


def exact_match_lmms(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_lmms_exact(prediction)
    return float(any(pred == normalize_lmms_exact(r) for r in references))


__all__ = ["normalize_vqa", "normalize_lower_punct", "vqa_accuracy", "exact_match", "NORMALIZERS", "CONTRACTIONS",
           "normalize_evalai", "vqa_accuracy_evalai", "exact_match_evalai", "normalize_lmms_exact", "exact_match_lmms",
           "evalai_contractions", "EVALAI_PERIOD_LIMIT"]
