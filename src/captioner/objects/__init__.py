"""Naming what is in the photo: the encoder's ImageNet classifier, its classes as caption words,
and a search that makes captions name the object the classifier is sure of.

    words.py    the 1000 classes as caption words (data file built from WordNet 3.0), articles, plurals
    tagger.py   tags from the pooled feature; which object a caption must name (`plan_object`)
    search.py   `ObjectSearch`: constrained beam search and borrowed hypernym words

Imports go one way: decoding -> objects -> pipeline.
"""

from captioner.objects.search import ENABLED_BY_DEFAULT, ObjectSearch
from captioner.objects.tagger import ImageNetTagger, ObjectPlan, Tag, plan_object
from captioner.objects.words import ClassWords, imagenet_words

__all__ = ["ENABLED_BY_DEFAULT", "ClassWords", "ImageNetTagger", "ObjectPlan", "ObjectSearch", "Tag", "imagenet_words", "plan_object"]
