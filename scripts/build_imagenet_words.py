"""Builds `src/captioner/objects/imagenet_words.json`: the caption words of each ImageNet-1k class.

ImageNet class ids are WordNet 3.0 noun synset offsets, so the words come from WordNet itself:

- noun: the word a caption would use. The class's own lemma if it is common (it occurs in the
  SemCor sense counts, `cntlist.rev`) and a single word; else the nearest hypernym's that is
  ("great grey owl" -> "owl", "macaw" -> "parrot"). Every dog breed is "dog" and every domestic cat
  "cat": Flickr8k-style captions say "a brown dog", not "a Chesapeake Bay retriever".
- basic: the nearest basic-level category among the hypernyms ("bird", "dog", "fish", "food"...),
  else the noun.
- chain: words to try, in order, when a caption model's vocabulary lacks the noun: the noun, the
  hypernyms' basic-level words, and "animal" for animals ("owl" -> "bird" -> "animal").
- related: the last resort when a vocabulary has no word of the chain: the single-word lemmas of
  the class and of its hypernyms three levels up, nearest first, without the words too vague to
  stand for a thing (`NOT_ANCHORS`): "ballpoint" -> "ballpen", "biro", "pen".
- plural: English rules plus WordNet's irregular plurals (`noun.exc`: goose -> geese).
- object: whether the class is a thing a caption names as its subject. Landscapes and places
  (seashore, valley, alp), clothing (lab coat, jersey: the subject is the person wearing it) and
  people (groom, scuba diver) are not.

Then the hand review: OVERRIDES below fixes the classes people photograph most (animals at home,
on farms and in zoos, common foods, vehicles, household objects) where the rules pick a rare or
wrong word. `reviewed: true` marks them.

Needs `nltk` (the `build` extra) and WordNet 3.0 as Debian packages it (`apt-get install
wordnet-base`: /usr/share/wordnet); nothing is downloaded:

    python scripts/build_imagenet_words.py            # writes the data file
    python scripts/build_imagenet_words.py --check    # exit 1 if the shipped file differs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ROOT / "scripts" / "imagenet_classes.tsv"
OUTPUT = ROOT / "src" / "captioner" / "objects" / "imagenet_words.json"
WORDNET = Path("/usr/share/wordnet")
FORMAT = "captioner-imagenet-words"

# WordNet 3.0's lexicographer file names (its `lexnames` file, which Debian does not ship).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object noun.person "
    "noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
_LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

# Basic-level categories: hypernym synset -> the word captions use. The nearest one wins.
BASIC = {
    "dog.n.01": "dog",
    "domestic_cat.n.01": "cat",
    "wildcat.n.03": "cat",
    "bird.n.01": "bird",
    "fish.n.01": "fish",
    "shark.n.01": "shark",
    "snake.n.01": "snake",
    "lizard.n.01": "lizard",
    "turtle.n.02": "turtle",
    "crocodilian_reptile.n.01": "crocodile",
    "frog.n.01": "frog",
    "salamander.n.01": "salamander",
    "insect.n.01": "insect",
    "butterfly.n.01": "butterfly",
    "spider.n.01": "spider",
    "crab.n.01": "crab",
    "bear.n.01": "bear",
    "monkey.n.01": "monkey",
    "ape.n.01": "ape",
    "horse.n.01": "horse",
    "cattle.n.01": "cow",
    "sheep.n.01": "sheep",
    "swine.n.01": "pig",
    "leporid.n.01": "rabbit",
    "squirrel.n.01": "squirrel",
    "rodent.n.01": "rodent",
    "whale.n.02": "whale",
    "seal.n.09": "seal",
    "big_cat.n.01": "cat",
    "canine.n.02": "dog",
    "mammal.n.01": "animal",
    "invertebrate.n.01": "animal",
    "animal.n.01": "animal",
    "car.n.01": "car",
    "truck.n.01": "truck",
    "bus.n.04": "bus",
    "train.n.01": "train",
    "locomotive.n.01": "train",
    "bicycle.n.01": "bicycle",
    "motorcycle.n.01": "motorcycle",
    "boat.n.01": "boat",
    "ship.n.01": "ship",
    "aircraft.n.01": "plane",
    "wheeled_vehicle.n.01": "vehicle",
    "ball.n.01": "ball",
    "musical_instrument.n.01": "instrument",
    "building.n.01": "building",
    "bridge.n.01": "bridge",
    "seat.n.03": "seat",
    "table.n.02": "table",
    "bottle.n.01": "bottle",
    "cup.n.01": "cup",
    "hat.n.01": "hat",
    "footwear.n.02": "shoe",
    "bag.n.01": "bag",
    "weapon.n.01": "weapon",
    "tool.n.01": "tool",
    "toy.n.01": "toy",
    "edible_fruit.n.01": "fruit",
    "vegetable.n.01": "vegetable",
    "beverage.n.01": "drink",
    "dish.n.02": "food",
    "food.n.02": "food",
    "food.n.01": "food",
    "flower.n.01": "flower",
    "fungus.n.01": "mushroom",
}
# Not subjects of a caption: what people wear, people themselves, landscapes and places.
NOT_OBJECTS = ("clothing.n.01", "person.n.01", "geological_formation.n.01", "body_covering.n.01", "covering.n.02")
NOT_OBJECT_LEXNAMES = {"noun.person", "noun.location"}

# Hypernym words too general to stand for a thing in a caption ("a device", "a commodity").
TOO_GENERAL = {
    "device",
    "commodity",
    "implement",
    "instrument",
    "container",
    "equipment",
    "structure",
    "covering",
    "object",
    "artifact",
    "material",
    "article",
    "housing",
    "timer",
    "stereo",
    "lens",
    "restraint",
    "mechanism",
    "system",
    "apparatus",
    "machine",
    "instrumentality",
    "protection",
    "creation",
    "decoration",
    "merchandise",
    "gear",
    "piece",
    "unit",
    "top",
    "support",
}

# Never a related word: beyond TOO_GENERAL, words a Flickr8k caption uses in another sense ("ride",
# "arm", "bank", "pool") or that name nothing ("good", "being", "surface"). Chosen by reading the
# related words the Flickr8k vocabulary would use for every class whose chain it lacks.
NOT_ANCHORS = TOO_GENERAL | {
    "good",
    "construction",
    "being",
    "organism",
    "arm",
    "surface",
    "control",
    "spot",
    "rubber",
    "bank",
    "plant",
    "pool",
    "bar",
    "litter",
    "case",
    "ride",
    "tank",
    "whole",
    "entity",
    "artefact",
    "instrumentation",
    "thing",
    "matter",
    "works",
}
RELATED_LEVELS = 3  # hypernym levels above the class whose lemmas are related words

# The hand review: classes people photograph most, where the rules above pick a rare or wrong word.
# Birds only a birder would name (dowitcher, limpkin, coucal) are "bird".
# index -> fields to replace.
OVERRIDES: dict[int, dict[str, Any]] = {
    1: {"noun": "goldfish", "plural": "goldfish"},
    2: {"noun": "shark"},
    3: {"noun": "shark"},
    4: {"noun": "shark"},
    7: {"noun": "rooster", "basic": "chicken", "chain": ["rooster", "chicken", "bird", "animal"]},
    8: {"noun": "hen", "basic": "chicken", "chain": ["hen", "chicken", "bird", "animal"]},
    9: {"noun": "ostrich"},
    10: {"noun": "bird"},
    11: {"noun": "goldfinch"},
    12: {"noun": "finch"},
    13: {"noun": "bird"},
    14: {"noun": "bird"},
    15: {"noun": "robin"},
    16: {"noun": "bird"},
    17: {"noun": "jay"},
    18: {"noun": "magpie"},
    19: {"noun": "chickadee"},
    20: {"noun": "bird"},
    21: {"noun": "hawk"},  # the bird: "kite" in a caption is the toy
    22: {"noun": "eagle"},
    23: {"noun": "vulture"},
    24: {"noun": "owl"},
    25: {"noun": "salamander"},
    26: {"noun": "newt"},
    27: {"noun": "newt"},
    30: {"noun": "frog"},
    31: {"noun": "frog"},
    32: {"noun": "frog"},
    33: {"noun": "turtle"},
    34: {"noun": "turtle"},
    35: {"noun": "turtle"},
    36: {"noun": "turtle"},
    37: {"noun": "tortoise"},
    38: {"noun": "lizard"},
    39: {"noun": "iguana"},
    40: {"noun": "lizard"},
    41: {"noun": "lizard"},
    42: {"noun": "lizard"},
    43: {"noun": "lizard"},
    44: {"noun": "lizard"},
    45: {"noun": "lizard"},
    46: {"noun": "lizard"},
    47: {"noun": "chameleon"},
    48: {"noun": "komodo dragon", "plural": "komodo dragons"},
    49: {"noun": "crocodile"},
    50: {"noun": "alligator"},
    51: {"noun": "dinosaur"},
    80: {"noun": "grouse"},
    81: {"noun": "ptarmigan"},
    82: {"noun": "grouse"},
    83: {"noun": "grouse"},
    84: {"noun": "peacock"},
    85: {"noun": "quail", "plural": "quail"},
    86: {"noun": "partridge"},
    87: {"noun": "parrot"},
    88: {"noun": "parrot"},
    89: {"noun": "cockatoo"},
    90: {"noun": "parrot"},
    91: {"noun": "bird"},
    92: {"noun": "bird"},
    93: {"noun": "hornbill"},
    94: {"noun": "hummingbird"},
    95: {"noun": "bird"},
    96: {"noun": "toucan"},
    97: {"noun": "duck"},
    98: {"noun": "duck"},
    99: {"noun": "goose", "plural": "geese"},
    100: {"noun": "swan"},
    101: {"noun": "elephant"},
    102: {"noun": "echidna"},
    103: {"noun": "platypus"},
    104: {"noun": "wallaby"},
    105: {"noun": "koala"},
    106: {"noun": "wombat"},
    107: {"noun": "jellyfish", "plural": "jellyfish"},
    108: {"noun": "sea anemone"},
    109: {"noun": "coral"},
    118: {"noun": "crab"},
    119: {"noun": "crab"},
    120: {"noun": "crab"},
    121: {"noun": "crab"},
    122: {"noun": "lobster"},
    123: {"noun": "lobster"},
    124: {"noun": "crayfish", "plural": "crayfish"},
    125: {"noun": "hermit crab"},
    127: {"noun": "stork"},
    128: {"noun": "stork"},
    129: {"noun": "spoonbill"},
    130: {"noun": "flamingo"},
    131: {"noun": "heron"},
    132: {"noun": "egret"},
    133: {"noun": "bird"},
    134: {"noun": "crane"},
    135: {"noun": "bird"},
    136: {"noun": "bird"},
    137: {"noun": "bird"},
    138: {"noun": "bird"},
    139: {"noun": "bird"},
    140: {"noun": "bird"},
    141: {"noun": "bird"},
    142: {"noun": "bird"},
    143: {"noun": "bird"},
    144: {"noun": "pelican"},
    145: {"noun": "penguin"},
    146: {"noun": "albatross"},
    147: {"noun": "whale"},
    148: {"noun": "whale"},
    149: {"noun": "dugong"},
    150: {"noun": "sea lion"},
    269: {"noun": "wolf", "plural": "wolves", "basic": "dog"},
    270: {"noun": "wolf", "plural": "wolves", "basic": "dog"},
    271: {"noun": "wolf", "plural": "wolves", "basic": "dog"},
    272: {"noun": "coyote", "basic": "dog"},
    273: {"noun": "dingo", "basic": "dog"},
    274: {"noun": "dhole", "basic": "dog"},
    275: {"noun": "wild dog", "basic": "dog"},
    276: {"noun": "hyena", "basic": "animal"},
    277: {"noun": "fox", "plural": "foxes"},
    278: {"noun": "fox", "plural": "foxes"},
    279: {"noun": "fox", "plural": "foxes"},
    280: {"noun": "fox", "plural": "foxes"},
    281: {"noun": "cat"},
    282: {"noun": "cat"},
    283: {"noun": "cat"},
    284: {"noun": "cat"},
    285: {"noun": "cat"},
    286: {"noun": "cougar", "basic": "cat"},
    287: {"noun": "lynx", "plural": "lynxes", "basic": "cat"},
    288: {"noun": "leopard", "basic": "cat"},
    289: {"noun": "snow leopard", "basic": "cat"},
    290: {"noun": "jaguar", "basic": "cat"},
    291: {"noun": "lion", "basic": "cat"},
    292: {"noun": "tiger", "basic": "cat"},
    293: {"noun": "cheetah", "basic": "cat"},
    294: {"noun": "bear"},
    295: {"noun": "bear"},
    296: {"noun": "polar bear"},
    297: {"noun": "bear"},
    298: {"noun": "mongoose"},
    299: {"noun": "meerkat"},
    300: {"noun": "beetle"},
    301: {"noun": "ladybug"},
    309: {"noun": "bee"},
    310: {"noun": "ant"},
    311: {"noun": "grasshopper"},
    314: {"noun": "cockroach"},
    315: {"noun": "mantis", "plural": "mantises"},
    316: {"noun": "cicada"},
    319: {"noun": "dragonfly", "plural": "dragonflies"},
    320: {"noun": "damselfly", "plural": "damselflies"},
    321: {"noun": "butterfly", "plural": "butterflies"},
    322: {"noun": "butterfly", "plural": "butterflies"},
    323: {"noun": "butterfly", "plural": "butterflies"},
    324: {"noun": "butterfly", "plural": "butterflies"},
    325: {"noun": "butterfly", "plural": "butterflies"},
    326: {"noun": "butterfly", "plural": "butterflies"},
    327: {"noun": "starfish", "plural": "starfish"},
    330: {"noun": "rabbit"},
    331: {"noun": "hare"},
    332: {"noun": "rabbit"},
    333: {"noun": "hamster"},
    334: {"noun": "porcupine"},
    335: {"noun": "squirrel"},
    336: {"noun": "marmot"},
    337: {"noun": "beaver"},
    338: {"noun": "guinea pig"},
    339: {"noun": "horse", "basic": "horse"},
    340: {"noun": "zebra"},
    341: {"noun": "pig"},
    342: {"noun": "boar"},
    343: {"noun": "warthog"},
    344: {"noun": "hippo"},
    345: {"noun": "ox", "plural": "oxen", "basic": "cow"},
    346: {"noun": "buffalo", "plural": "buffaloes", "basic": "cow"},
    347: {"noun": "bison", "plural": "bison", "basic": "cow"},
    348: {"noun": "ram", "basic": "sheep"},
    349: {"noun": "sheep", "plural": "sheep", "basic": "sheep"},
    350: {"noun": "ibex", "plural": "ibexes", "basic": "goat"},
    351: {"noun": "antelope"},
    352: {"noun": "impala"},
    353: {"noun": "gazelle"},
    354: {"noun": "camel"},
    355: {"noun": "llama"},
    356: {"noun": "weasel"},
    357: {"noun": "mink"},
    358: {"noun": "polecat"},
    359: {"noun": "ferret"},
    360: {"noun": "otter"},
    361: {"noun": "skunk"},
    362: {"noun": "badger"},
    363: {"noun": "armadillo"},
    364: {"noun": "sloth"},
    365: {"noun": "orangutan"},
    366: {"noun": "gorilla"},
    367: {"noun": "chimpanzee"},
    368: {"noun": "gibbon"},
    369: {"noun": "gibbon"},
    370: {"noun": "monkey"},
    371: {"noun": "monkey"},
    372: {"noun": "baboon"},
    373: {"noun": "macaque"},
    374: {"noun": "langur"},
    375: {"noun": "monkey"},
    376: {"noun": "monkey"},
    377: {"noun": "marmoset"},
    378: {"noun": "monkey"},
    379: {"noun": "monkey"},
    380: {"noun": "monkey"},
    381: {"noun": "monkey"},
    382: {"noun": "monkey"},
    383: {"noun": "lemur"},
    384: {"noun": "lemur"},
    385: {"noun": "elephant"},
    386: {"noun": "elephant"},
    387: {"noun": "red panda"},
    388: {"noun": "panda"},
    389: {"noun": "fish", "plural": "fish"},
    390: {"noun": "eel"},
    391: {"noun": "salmon", "plural": "salmon"},
    392: {"noun": "fish", "plural": "fish"},
    393: {"noun": "clownfish", "plural": "clownfish"},
    394: {"noun": "sturgeon"},
    395: {"noun": "fish", "plural": "fish"},
    396: {"noun": "lionfish", "plural": "lionfish"},
    397: {"noun": "pufferfish", "plural": "pufferfish"},
    # vehicles
    403: {"noun": "aircraft carrier"},
    404: {"noun": "plane", "basic": "plane"},
    405: {"noun": "airship"},
    407: {"noun": "ambulance"},
    408: {"noun": "vehicle"},
    436: {"noun": "car"},
    444: {"noun": "bicycle", "basic": "bicycle"},
    466: {"noun": "train", "basic": "train"},
    468: {"noun": "taxi"},
    472: {"noun": "canoe"},
    484: {"noun": "boat", "basic": "boat"},
    510: {"noun": "ship", "basic": "ship"},
    511: {"noun": "car"},
    547: {"noun": "train", "basic": "train"},
    555: {"noun": "fire truck", "basic": "truck"},
    565: {"noun": "train", "basic": "train"},
    569: {"noun": "truck", "basic": "truck"},
    573: {"noun": "go kart", "basic": "car"},
    575: {"noun": "golf cart", "basic": "cart"},
    576: {"noun": "gondola"},
    581: {"noun": "car"},
    586: {"noun": "truck", "basic": "truck"},
    595: {"noun": "tractor"},
    603: {"noun": "carriage", "basic": "carriage"},
    609: {"noun": "jeep"},
    612: {"noun": "rickshaw"},
    627: {"noun": "limousine"},
    628: {"noun": "ship"},
    654: {"noun": "bus", "plural": "buses", "basic": "bus"},
    656: {"noun": "van"},
    661: {"noun": "car"},
    665: {"noun": "scooter"},
    670: {"noun": "scooter"},
    671: {"noun": "bike", "basic": "bicycle"},
    675: {"noun": "truck", "basic": "truck"},
    705: {"noun": "train", "basic": "train"},
    717: {"noun": "truck", "basic": "truck"},
    724: {"noun": "ship", "basic": "ship"},
    734: {"noun": "police van", "basic": "van"},
    751: {"noun": "race car", "basic": "car"},
    757: {"noun": "vehicle"},
    779: {"noun": "school bus", "plural": "school buses", "basic": "bus"},
    814: {"noun": "speedboat", "basic": "boat"},
    817: {"noun": "sports car", "basic": "car"},
    820: {"noun": "train", "basic": "train"},
    829: {"noun": "tram", "basic": "train"},
    833: {"noun": "submarine"},
    847: {"noun": "tank"},
    864: {"noun": "truck", "basic": "truck"},
    867: {"noun": "truck", "basic": "truck"},
    870: {"noun": "tricycle", "basic": "bicycle"},
    871: {"noun": "boat", "basic": "boat"},
    874: {"noun": "bus", "plural": "buses", "basic": "bus"},
    880: {"noun": "unicycle", "basic": "bicycle"},
    895: {"noun": "plane", "basic": "plane"},
    # household and everyday things
    417: {"noun": "balloon"},
    430: {"noun": "basketball", "basic": "ball"},
    457: {"noun": "bow tie"},
    504: {"noun": "coffee mug", "basic": "cup"},
    522: {"noun": "croquet ball", "basic": "ball"},
    559: {"noun": "chair", "basic": "chair"},
    574: {"noun": "golf ball", "basic": "ball"},
    620: {"noun": "laptop"},
    673: {"noun": "mouse", "plural": "mice"},
    681: {"noun": "laptop"},
    722: {"noun": "ping pong ball", "basic": "ball"},
    765: {"noun": "chair", "basic": "chair"},
    768: {"noun": "rugby ball", "basic": "ball"},
    805: {"noun": "soccer ball", "basic": "ball"},
    852: {"noun": "tennis ball", "basic": "ball"},
    850: {"noun": "teddy bear", "basic": "toy"},
    879: {"noun": "umbrella"},
    890: {"noun": "volleyball", "basic": "ball"},
    898: {"noun": "water bottle", "basic": "bottle"},
    # food and drink
    924: {"noun": "guacamole", "basic": "food"},
    925: {"noun": "soup", "basic": "food"},
    926: {"noun": "hot pot", "basic": "food"},
    927: {"noun": "trifle", "basic": "food"},
    928: {"noun": "ice cream", "plural": "ice creams", "basic": "food"},
    929: {"noun": "ice lolly", "plural": "ice lollies", "basic": "food"},
    930: {"noun": "bread", "plural": "loaves of bread", "basic": "food"},
    931: {"noun": "bagel", "basic": "food"},
    932: {"noun": "pretzel", "basic": "food"},
    933: {"noun": "cheeseburger", "basic": "food"},
    934: {"noun": "hot dog", "basic": "food"},
    935: {"noun": "mashed potatoes", "plural": "mashed potatoes", "basic": "food"},
    936: {"noun": "cabbage", "basic": "vegetable"},
    937: {"noun": "broccoli", "plural": "broccoli", "basic": "vegetable"},
    938: {"noun": "cauliflower", "basic": "vegetable"},
    939: {"noun": "zucchini", "basic": "vegetable"},
    940: {"noun": "squash", "plural": "squashes", "basic": "vegetable"},
    941: {"noun": "squash", "plural": "squashes", "basic": "vegetable"},
    942: {"noun": "squash", "plural": "squashes", "basic": "vegetable"},
    943: {"noun": "cucumber", "basic": "vegetable"},
    944: {"noun": "artichoke", "basic": "vegetable"},
    945: {"noun": "pepper", "basic": "vegetable"},
    946: {"noun": "cardoon", "basic": "vegetable"},
    947: {"noun": "mushroom", "basic": "mushroom"},
    948: {"noun": "apple", "basic": "fruit"},
    949: {"noun": "strawberry", "plural": "strawberries", "basic": "fruit"},
    950: {"noun": "orange", "basic": "fruit"},
    951: {"noun": "lemon", "basic": "fruit"},
    952: {"noun": "fig", "basic": "fruit"},
    953: {"noun": "pineapple", "basic": "fruit"},
    954: {"noun": "banana", "basic": "fruit"},
    955: {"noun": "jackfruit", "basic": "fruit"},
    956: {"noun": "custard apple", "basic": "fruit"},
    957: {"noun": "pomegranate", "basic": "fruit"},
    959: {"noun": "carbonara", "plural": "carbonara", "basic": "food"},
    960: {"noun": "chocolate sauce", "plural": "chocolate sauce", "basic": "food"},
    961: {"noun": "dough", "plural": "dough", "basic": "food"},
    962: {"noun": "meatloaf", "plural": "meatloaves", "basic": "food"},
    963: {"noun": "pizza", "basic": "food"},
    964: {"noun": "pie", "basic": "food"},
    965: {"noun": "burrito", "basic": "food"},
    966: {"noun": "wine", "plural": "wine", "basic": "drink"},
    967: {"noun": "cup", "basic": "cup", "chain": ["cup", "coffee", "drink"]},  # an espresso is photographed as a cup
    968: {"noun": "cup", "basic": "cup"},
    969: {"noun": "eggnog", "plural": "eggnog", "basic": "drink"},
    # not subjects
    970: {"object": False},
    972: {"object": False},
    973: {"object": False},
    974: {"object": False},
    975: {"object": False},
    976: {"object": False},
    977: {"object": False},
    978: {"object": False},
    979: {"object": False},
    980: {"object": False},
    981: {"object": False},
    982: {"object": False},
    983: {"object": False},
    984: {"noun": "flower", "basic": "flower"},
    985: {"noun": "daisy", "plural": "daisies", "basic": "flower"},
    986: {"noun": "flower", "basic": "flower"},
    987: {"noun": "corn", "plural": "corn", "basic": "vegetable"},
    988: {"noun": "acorn", "basic": "nut"},
    989: {"noun": "rose hip", "basic": "fruit"},
    990: {"noun": "buckeye", "basic": "nut"},
    991: {"noun": "mushroom", "basic": "mushroom"},
    992: {"noun": "mushroom", "basic": "mushroom"},
    993: {"noun": "mushroom", "basic": "mushroom"},
    994: {"noun": "mushroom", "basic": "mushroom"},
    995: {"noun": "mushroom", "basic": "mushroom"},
    996: {"noun": "mushroom", "basic": "mushroom"},
    997: {"noun": "mushroom", "basic": "mushroom"},
    998: {"noun": "corn", "plural": "corn", "basic": "vegetable"},
    726: {"noun": "woodworking plane", "basic": "tool"},
    999: {"noun": "toilet paper", "plural": "toilet paper", "basic": "toilet paper"},
}

_VOWEL_SOUND_EXCEPTIONS = ("uni", "use", "one", "eu")


def plural(noun: str, irregular: dict[str, str]) -> str:
    """English plural of a (possibly multi-word) noun: the last word changes."""
    head, _, last = noun.rpartition(" ")
    if last in irregular:
        word = irregular[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def wordnet_reader(tmp: Path) -> Any:
    """NLTK's WordNet reader over Debian's WordNet 3.0 files (plus the `lexnames` Debian leaves out)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (WORDNET / "data.noun").is_file():
        sys.exit(f"WordNet 3.0 not found in {WORDNET}: apt-get install wordnet-base")
    for name in ("data.noun", "index.noun", "noun.exc", "cntlist.rev", "data.verb", "index.verb", "verb.exc", "data.adj", "index.adj", "adj.exc"):
        shutil.copy(WORDNET / name, tmp / name)
    for name in ("data.adv", "index.adv", "adv.exc"):
        shutil.copy(WORDNET / name, tmp / name)
    (tmp / "lexnames").write_text("".join(f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)))
    nltk.data.path.append(str(tmp))  # NLTK only opens files under its data paths

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:  # a mapping from NLTK's own download to these files: not needed
            return None

    return Reader(str(tmp), None)


def ancestors(synset: Any) -> list[Any]:
    """The synset and its hypernyms, nearest first (breadth first, each once); within one level by
    basic-category priority, then name. NLTK returns hypernyms in an order that changes between
    runs, so the order is fixed here: the same WordNet always gives the same file."""
    priority = {name: i for i, name in enumerate(BASIC)}
    seen, order, frontier = {synset.name()}, [synset], [synset]
    while frontier:
        nxt = []
        for s in frontier:
            for h in s.hypernyms() + s.instance_hypernyms():
                if h.name() not in seen:
                    seen.add(h.name())
                    nxt.append(h)
        nxt.sort(key=lambda h: (priority.get(h.name(), len(priority)), h.name()))
        order.extend(nxt)
        frontier = nxt
    return order


def related_words(synset: Any, levels: int = RELATED_LEVELS) -> list[str]:
    """The single-word lemmas of the synset and of its hypernyms up to `levels` above, nearest first,
    except NOT_ANCHORS ("ballpoint" -> ballpoint, ballpen, biro, pen): where a vocabulary has none of a
    chain's basic words, the nearest of these it has can stand for the class ("a man with a pen")."""
    words, level = [], [synset]
    for _ in range(levels + 1):
        for s in sorted(level, key=lambda s: s.name()):
            words += [name for name in (lemma.name().lower() for lemma in s.lemmas()) if name.isalpha() and name not in NOT_ANCHORS]
        level = [h for s in level for h in s.hypernyms() + s.instance_hypernyms()]
    return words


def _common_lemma(synset: Any) -> str | None:
    for lemma in synset.lemmas():
        if "_" not in lemma.name() and "-" not in lemma.name() and lemma.count() > 0:
            return lemma.name().lower()
    return None


def common_noun(chain: list[Any], label: str) -> str:
    """The caption word: the class's own common single-word lemma (one in the SemCor counts); for
    animals the nearest hypernym's, up to the basic category ("great grey owl" -> "owl"); for other
    things a single-word label, else the direct hypernym's word unless it is too general, else the label."""
    own = _common_lemma(chain[0])
    if own:
        return own
    if chain[0].lexname() == "noun.animal":
        for s in chain[1:]:
            word = _common_lemma(s)
            if word:
                return word
            if s.name() in BASIC:
                break
        return label
    if " " not in label:
        return label
    for h in sorted(chain[0].hypernyms(), key=lambda h: h.name()):
        word = _common_lemma(h)
        if word and word not in TOO_GENERAL:
            return word
    return label


def build(classes: list[tuple[int, str, str]], wn: Any) -> list[dict[str, Any]]:
    irregular = {}
    for plural_form, singulars in wn._exception_map["n"].items():
        if plural_form.endswith(("ae", "i", "a", "ei", "x")):  # Latin and French plurals: "camerae", "octopi"
            continue
        for singular in singulars:
            if " " not in singular and "_" not in singular and singular != plural_form:
                irregular.setdefault(singular, plural_form)
    irregular.update({"fish": "fish", "sheep": "sheep", "deer": "deer", "moose": "moose", "bison": "bison", "person": "people", "mouse": "mice"})
    rows = []
    for index, wnid, label in classes:
        synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
        chain = ancestors(synset)
        names = {s.name() for s in chain}
        if label.lower() not in {lemma.name().lower() for lemma in synset.lemmas()}:
            sys.exit(f"{CLASSES}: class {index} label {label!r} is not a lemma of {wnid} ({synset.name()})")
        label_words = label.replace("_", " ").lower()
        basic = next((BASIC[s.name()] for s in chain if s.name() in BASIC), None)
        if "dog.n.01" in names and "wolf.n.01" not in names and "fox.n.01" not in names:
            noun = "dog"
        elif "domestic_cat.n.01" in names:
            noun = "cat"
        else:
            noun = common_noun(chain, label_words)
        basic = basic or noun
        is_object = not (synset.lexname() in NOT_OBJECT_LEXNAMES or names & set(NOT_OBJECTS))
        words = [noun] + [BASIC[s.name()] for s in chain if s.name() in BASIC]
        if "animal.n.01" in names:
            words.append("animal")
        row: dict[str, Any] = {
            "id": index,
            "wnid": wnid,
            "label": label_words,
            "noun": noun,
            "plural": plural(noun, irregular),
            "basic": basic,
            "chain": list(dict.fromkeys(words)),
            "object": is_object,
            "reviewed": False,
        }
        if index in OVERRIDES:
            fix = OVERRIDES[index]
            row.update(fix)
            if "noun" in fix and "plural" not in fix:
                row["plural"] = plural(row["noun"], irregular)
            if "chain" not in fix:
                row["chain"] = list(dict.fromkeys([row["noun"], row["basic"], *words[1:]]))
            row["reviewed"] = True
        row["related"] = [w for w in dict.fromkeys(related_words(synset)) if w not in row["chain"]]
        rows.append(row)
    return rows


def read_classes(path: Path = CLASSES) -> list[tuple[int, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            index, wnid, label = line.split("\t")
            out.append((int(index), wnid, label))
    if [i for i, _, _ in out] != list(range(1000)) or [w for _, w, _ in out] != sorted(w for _, w, _ in out):
        sys.exit(f"{path}: expected the 1000 wnids in sorted order")
    return out


def render(rows: list[dict[str, Any]]) -> str:
    header = {
        "format": FORMAT,
        "version": 1,
        "source": "WordNet 3.0 (Princeton University; WordNet licence) via scripts/build_imagenet_words.py; hand review in its OVERRIDES",
        "fields": "id: classifier output index; wnid: WordNet noun offset; label: ImageNet short label; noun: caption word; plural; "
        "basic: basic-level noun; chain: words to try when a vocabulary lacks the noun; object: a caption subject; reviewed: checked by hand; "
        "related: WordNet synonyms and hypernyms to try when a vocabulary has no word of the chain",
    }
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    return "{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in header.items()) + '  "classes": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = build(read_classes(), wordnet_reader(Path(tmp)))
    text = render(rows)
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        print("up to date" if same else f"{args.output} differs from what WordNet gives")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    reviewed = sum(r["reviewed"] for r in rows)
    print(f"wrote {args.output}: {len(rows)} classes, {sum(r['object'] for r in rows)} objects, {reviewed} reviewed by hand")
    return 0


if __name__ == "__main__":
    sys.exit(main())
