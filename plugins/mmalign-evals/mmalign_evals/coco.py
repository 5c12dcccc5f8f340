"""The 80 COCO object classes, a synonym table, and rule-based object extraction for CHAIR and object recall.

Origin: the CHAIR convention of Rohrbach et al. 2018, "Object Hallucination in
Image Captioning" (EMNLP), whose ``synonyms.txt`` maps words to the 80 COCO
categories, and which RLHF-V's Object HalBench scoring reuses. The table below
is written for mmalign in that convention -- one line per category, its name
first, then synonyms and hyponyms -- and is not a copy of the original file,
so numbers can differ slightly from the original scripts. Plurals are
generated (regular English rules plus the irregular forms listed), and these
multi-word rules of the original are kept:

* the longest phrase wins, so "hot dog" is a hot dog, not a dog, and "teddy
  bear" is not a bear; "toilet seat" is a toilet and "bow tie" a tie;
* "baby", "adult", "young" or "mother" before an animal name the animal, not a
  person ("baby elephant" -> elephant);
* "passenger" before a vehicle names the vehicle ("passenger train" -> train).

As in the original, negation is not parsed: "there is no dog" mentions a dog.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

# One line per COCO category: "category: synonym, synonym, ...".
SYNONYM_TABLE = """
person: person, girl, boy, man, woman, kid, child, chef, baker, people, adult, rider, baby, worker, passenger, sister, brother, biker, policeman, policewoman, cop, officer, lady, cowboy, cowgirl, bride, groom, male, female, guy, traveler, traveller, mother, father, gentleman, pitcher, player, skier, snowboarder, skater, skateboarder, surfer, foreigner, caller, coworker, patient, politician, soldier, grandchild, grandmother, grandfather, serviceman, walker, drinker, doctor, nurse, bicyclist, cyclist, thief, buyer, teenager, teen, student, camper, driver, hunter, shopper, villager, pedestrian, catcher, batter, umpire, teammate, toddler, infant, daughter, son, husband, wife, spectator, tourist, fisherman, farmer, vendor, customer, citizen, businessman, businesswoman, friend, crowd, family, audience, athlete, referee, jockey, motorcyclist, waiter, waitress, youngster
bicycle: bicycle, bike, unicycle, minibike, trike, tricycle
car: car, automobile, van, minivan, sedan, suv, hatchback, cab, jeep, coupe, taxicab, limo, limousine, taxi, convertible, wagon
motorcycle: motorcycle, scooter, motor bike, motor cycle, motorbike, moped, dirt bike
airplane: airplane, jetliner, plane, air plane, monoplane, aircraft, jet, airbus, biplane, seaplane, airliner, aeroplane
bus: bus, minibus, trolley, trolleybus, coach bus, school bus, double decker
train: train, locomotive, tramway, caboose, tram, railcar, subway train
truck: truck, pickup, lorry, hauler, firetruck, fire truck, pickup truck, semi truck, dump truck, tow truck
boat: boat, ship, liner, sailboat, motorboat, dinghy, powerboat, speedboat, canoe, skiff, yacht, kayak, catamaran, pontoon, houseboat, vessel, rowboat, trawler, ferryboat, watercraft, tugboat, schooner, barge, ferry, sailboard, paddleboat, lifeboat, freighter, steamboat, riverboat, battleship, steamship, gondola, raft
traffic light: traffic light, street light, traffic signal, stop light, streetlight, stoplight, traffic lamp
fire hydrant: fire hydrant, hydrant
stop sign: stop sign
parking meter: parking meter, meter
bench: bench, pew
bird: bird, ostrich, owl, seagull, goose, duck, parakeet, falcon, robin, pelican, waterfowl, heron, hummingbird, mallard, finch, pigeon, sparrow, seabird, osprey, blackbird, fowl, shorebird, woodpecker, egret, chickadee, quail, bluebird, kingfisher, buzzard, gull, swan, bluejay, flamingo, cormorant, parrot, loon, gosling, waterbird, pheasant, rooster, sandpiper, crow, raven, turkey, oriole, warbler, magpie, peacock, cockatiel, lorikeet, puffin, vulture, condor, macaw, peafowl, cockatoo, songbird, hen, chick, eagle, hawk, stork, crane bird
cat: cat, kitten, feline, tabby, kitty
dog: dog, puppy, beagle, pup, chihuahua, schnauzer, dachshund, rottweiler, canine, pitbull, collie, pug, terrier, poodle, labrador, doggie, doberman, mutt, doggy, spaniel, bulldog, sheepdog, weimaraner, corgi, greyhound, retriever, hound, whippet, husky, dalmatian, shepherd dog, german shepherd
horse: horse, colt, pony, racehorse, stallion, equine, mare, foal, palomino, mustang, clydesdale, bronco
sheep: sheep, lamb, ram, goat, ewe
cow: cow, cattle, oxen, ox, calf, holstein, heifer, buffalo, bull, zebu, bison
elephant: elephant
bear: bear, grizzly, polar bear, black bear, brown bear
zebra: zebra
giraffe: giraffe
backpack: backpack, knapsack, rucksack
umbrella: umbrella, parasol
handbag: handbag, wallet, purse, briefcase, clutch bag
tie: tie, necktie, bow tie
suitcase: suitcase, suit case, luggage
frisbee: frisbee, flying disc
skis: skis, ski
snowboard: snowboard
sports ball: sports ball, ball, soccer ball, tennis ball, beach ball
kite: kite
baseball bat: baseball bat, bat
baseball glove: baseball glove, mitt, baseball mitt, catcher's mitt
skateboard: skateboard
surfboard: surfboard, longboard, skimboard, shortboard, wakeboard, surf board
tennis racket: tennis racket, racket, racquet, tennis racquet
bottle: bottle
wine glass: wine glass, wineglass
cup: cup, mug, teacup
fork: fork
knife: knife, pocketknife
spoon: spoon
bowl: bowl
banana: banana
apple: apple
sandwich: sandwich, burger, sub, cheeseburger, hamburger, panini, wrap sandwich
orange: orange
broccoli: broccoli
carrot: carrot
hot dog: hot dog, hotdog
pizza: pizza
donut: donut, doughnut, bagel
cake: cake, cheesecake, cupcake, shortcake, coffeecake, pancake
chair: chair, seat, stool, armchair
couch: couch, sofa, recliner, futon, loveseat, settee, chesterfield
potted plant: potted plant, houseplant, house plant, plant pot, flower pot, flowerpot
bed: bed
dining table: dining table, table, desk, dinner table, kitchen table
toilet: toilet, urinal, commode, lavatory, potty, toilet seat, toilet bowl
tv: tv, television, televison, monitor, flat screen, flatscreen
laptop: laptop, computer, notebook computer, netbook, macbook, laptop computer
mouse: mouse, computer mouse
remote: remote, remote control, controller
keyboard: keyboard
cell phone: cell phone, mobile phone, phone, cellphone, telephone, smartphone, iphone
microwave: microwave, microwave oven
oven: oven, stovetop, stove, stove top oven
toaster: toaster
sink: sink
refrigerator: refrigerator, fridge, freezer
book: book, novel, textbook
clock: clock
vase: vase
scissors: scissors, scissor
teddy bear: teddy bear, teddybear, teddy
hair drier: hair drier, hairdryer, hair dryer, blow dryer, blowdryer, blow drier
toothbrush: toothbrush, tooth brush
"""

IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "policeman": "policemen",
    "policewoman": "policewomen", "gentleman": "gentlemen", "serviceman": "servicemen", "fisherman": "fishermen",
    "businessman": "businessmen", "businesswoman": "businesswomen", "mouse": "mice", "goose": "geese", "ox": "oxen",
    "knife": "knives", "pocketknife": "pocketknives", "sheep": "sheep", "fish": "fish", "calf": "calves",
    "foot": "feet", "tooth": "teeth", "bus": "buses", "skis": "skis", "scissors": "scissors", "cattle": "cattle",
    "people": "people", "oxen": "oxen", "luggage": "luggage", "broccoli": "broccoli", "bison": "bison",
    "deer": "deer", "waterfowl": "waterfowl", "fowl": "fowl", "couple": "couples", "wife": "wives",
    "passerby": "passersby",
}
ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
VEHICLES = ("airplane", "bus", "train", "truck", "boat", "car")
ANIMAL_PREFIXES = ("baby", "adult", "young", "mother", "mama")

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def plural(word: str) -> str:
    """English plural of a word (the last word of a phrase is inflected)."""
    head, _, last = word.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        out = IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        out = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        out = last[:-1] + "ies"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out


@lru_cache(maxsize=1)
def synonym_map() -> dict[tuple[str, ...], str]:
    """Token tuple (singular and plural of every synonym, plus the special phrases) -> COCO category."""
    table: dict[tuple[str, ...], str] = {}
    for line in SYNONYM_TABLE.strip().splitlines():
        category, _, words = line.partition(":")
        for word in [w.strip() for w in words.split(",") if w.strip()]:
            for form in (word, plural(word)):
                table.setdefault(tuple(form.split()), category.strip())
    for category in ANIMALS:
        for word, cat in list(table.items()):
            if cat != category or len(word) != 1:
                continue
            for prefix in ANIMAL_PREFIXES:
                table[(prefix, *word)] = category
    for category in VEHICLES:
        for word, cat in list(table.items()):
            if cat == category and len(word) == 1:
                table[("passenger", *word)] = category
    return table


COCO_CATEGORIES: tuple[str, ...] = tuple(
    line.partition(":")[0].strip() for line in SYNONYM_TABLE.strip().splitlines()
)


@dataclass(frozen=True)
class ObjectMention:
    """One object mention: the words as written, the COCO category and the token index."""

    words: str
    category: str
    index: int


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, and an inner apostrophe)."""
    return _WORD.findall(text.lower().replace("’", "'"))


def extract_mentions(text: str) -> list[ObjectMention]:
    """Every COCO object mention in ``text``, longest phrase first, left to right."""
    table = synonym_map()
    longest = max(len(k) for k in table)
    words = tokens(text)
    out: list[ObjectMention] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            key = tuple(words[i : i + n])
            if key in table:
                out.append(ObjectMention(" ".join(key), table[key], i))
                i += n
                break
        else:
            i += 1
    return out


def extract_objects(text: str) -> set[str]:
    """The set of COCO categories mentioned in ``text``."""
    return {m.category for m in extract_mentions(text)}


def objects_from_list(reply: str) -> list[ObjectMention]:
    """Mentions in a judge's comma-separated object list (each item mapped through the table; "none" is empty)."""
    out: list[ObjectMention] = []
    for k, item in enumerate(re.split(r"[,;\n]", reply)):
        item = item.strip().strip(".").strip()
        if not item or item.lower() in ("none", "nothing", "n/a"):
            continue
        for m in extract_mentions(item):
            out.append(ObjectMention(m.words, m.category, k))
    return out


def category_names(categories: Iterable[dict]) -> dict[int, str]:
    """COCO ``categories`` records -> category id to (lower-case) name."""
    return {int(c["id"]): str(c["name"]).strip().lower() for c in categories}


def caption_objects(captions: Sequence[str]) -> set[str]:
    """Objects named in reference captions (part of the ground truth in the RLHF-V convention)."""
    found: set[str] = set()
    for caption in captions:
        found |= extract_objects(caption)
    return found


__all__ = [
    "COCO_CATEGORIES",
    "SYNONYM_TABLE",
    "ObjectMention",
    "plural",
    "synonym_map",
    "tokens",
    "extract_mentions",
    "extract_objects",
    "objects_from_list",
    "caption_objects",
    "category_names",
]
