"""Novel-object captioning: a search that names what the ImageNet classifier is sure of.

`ObjectSearch` is a `SearchDecoder` whose `caption` also tags each image with the encoder's own
ImageNet classifier and, when one object is confident enough (`plan_object`), makes sure the
caption names it:

1. Constrained beam search (Anderson et al. 2017, with one disjunctive constraint): two banks of
   beams per image, one whose captions have not yet written the object's word (singular or plural),
   one whose captions have. A word from the constraint moves a beam from the first bank to the
   second; only the second bank may end, and the best finished caption of the second bank wins.
   It only runs for images whose ordinary caption lacks the word.
2. Borrowed words (in the spirit of Hendricks et al. 2016): when the decoder's vocabulary lacks the
   noun ("owl"), the constraint is on the in-vocabulary hypernym ("bird") and the noun then
   replaces it in the text, articles and plural fixed ("a bird on a branch" -> "an owl on a branch").
   That is exactly what copying the hypernym's embedding and output rows into a new word would
   give: with equal rows the decoder cannot tell the two apart, so the caption is the same and
   the classifier picks the word.

It works for any `Decoder` (merge, attention), since it only steps the decoder. An image whose
classifier is unsure gets the ordinary caption, untouched.
"""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np
import tensorflow as tf

from captioner import defaults
from captioner.decoding import Hypothesis, SearchDecoder, check_search
from captioner.models.base import Decoder
from captioner.objects.tagger import DEFAULT_THRESHOLD, DEFAULT_TOP_K, ImageNetTagger, ObjectPlan, plan_object, word_probability
from captioner.objects.words import animal_words, substitute
from captioner.vocab import Vocabulary

# Whether `Captioner` names confident objects unless told otherwise: on, by measurement (README,
# "Naming what is in the photo": 1,000 Flickr8k dev images within the allowed change, the
# out-of-domain set much better).
ENABLED_BY_DEFAULT = True
# When a caption must name an animal other than these, it may not also invent people, their
# clothes or other animals: a Flickr8k decoder puts "a man in a red shirt" or "a brown dog" into
# every photo it does not know.
PEOPLE_ANIMALS = frozenset({"dog", "dogs", "horse", "horses"})
PEOPLE_WORDS = tuple(
    "man men woman women boy boys girl girls child children kid kids person people baby toddler lady guy player players "
    "shirt jacket dress coat hat uniform outfit costume helmet jersey shorts pants swimsuit vest sweater scarf wearing "
    "dog dogs puppy puppies".split()
)
DEFAULT_SURE = 0.6  # things, and animals or foods the caption calls something else plausible, need this much
DEFAULT_PLAUSIBLE = 0.1  # "a dog" is plausible when the classifier gives dogs this much
DEFAULT_WITHIN = 5  # "a man and a dog", "a small black and white bird": the subject comes early


class ObjectSearch(SearchDecoder):
    """A `SearchDecoder` that tags images and names their confident object.

    Args:
        decoder, vocab, max_length, block_repeats: as for `SearchDecoder`.
        tagger: the encoder's ImageNet classifier.
        name_objects: constrain captions to name confident objects; False only tags.
        threshold: summed class probability an object needs before its word is required.
        top_k: tags reported per image.
    """

    def __init__(
        self,
        decoder: Decoder,
        vocab: Vocabulary,
        tagger: ImageNetTagger,
        name_objects: bool = ENABLED_BY_DEFAULT,
        threshold: float = DEFAULT_THRESHOLD,
        top_k: int = DEFAULT_TOP_K,
        within: int = DEFAULT_WITHIN,
        sure: float = DEFAULT_SURE,
        plausible: float = DEFAULT_PLAUSIBLE,
        max_length: int | None = None,
        block_repeats: bool = True,
    ) -> None:
        super().__init__(decoder, vocab, max_length, block_repeats)
        self.tagger = tagger
        self.name_objects = name_objects
        self.threshold = threshold
        self.top_k = top_k
        self.within = within
        self.sure = sure
        self.plausible = plausible
        self._people_ids = [vocab.word_to_id[w] for w in PEOPLE_WORDS if w in vocab.word_to_id]
        self._animal_ids = [vocab.word_to_id[w] for w in animal_words() if w in vocab.word_to_id]
        self.compiled_constrained = tf.function(
            self._constrained_graph,
            input_signature=[
                tf.TensorSpec((None, *decoder.feature_shape()), tf.float32),
                tf.TensorSpec((None, decoder.config.vocab_size), tf.bool),
                tf.TensorSpec((None, decoder.config.vocab_size), tf.bool),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((), tf.int32),
                tf.TensorSpec((), tf.float32),
            ],
        )

    # --- the constrained search ----------------------------------------------------------------

    def _constrained_graph(
        self, features: tf.Tensor, allowed: tf.Tensor, banned: tf.Tensor, within: tf.Tensor, beam_size: tf.Tensor, length_penalty: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Beam search in two banks of `beam_size`: bank 0 has not written an `allowed` word (B, V) yet, bank 1 has.

        The object is named once (bank 1 may not write an `allowed` word again), among the first
        `within` (B,) words, and `banned` (B, V) words are never written.

        Returns bank 1's hypotheses, best first: history (B, K, t), log_prob (B, K), score (B, K), maps (B, K, t, L).
        """
        batch = tf.shape(features)[0]
        cells = self._cells(features)
        vocab_size = self.decoder.config.vocab_size
        k = beam_size
        hyps = 2 * k  # per image: bank 0 then bank 1
        memory = tf.nest.map_structure(lambda m: tf.repeat(m, hyps, axis=0), self.decoder.encode_image(features))
        state = self.decoder.initial_state(memory)
        token = tf.fill([batch * hyps], self.vocab.start_id)  # (A*2K,)
        first = tf.concat([[0.0], tf.fill([hyps - 1], -np.inf)], axis=0)  # one live beam, in bank 0
        log_prob = tf.tile(first[None, :], [batch, 1])  # (A, 2K)
        finished = tf.zeros([batch, hyps], tf.bool)
        length = tf.zeros([batch, hyps])
        history = tf.zeros([batch, hyps, 0], tf.int32)  # (A, 2K, t)
        maps = tf.zeros([batch, hyps, 0, cells])  # (A, 2K, t, L)
        # As in `SearchDecoder`'s beam search, only the A images still searching are stepped: an
        # image is done when its bank 1 has ended, whatever the other images in the batch do.
        active = tf.range(batch)  # (A,)
        results = self._empty_results(batch, hyps, cells)
        pad_only = tf.where(tf.range(vocab_size) == self.vocab.pad_id, 0.0, -np.inf)  # (V,)
        is_end = tf.range(vocab_size) == self.vocab.end_id  # (V,)
        allowed = allowed[:, None, :]  # (A, 1, V)
        banned = banned & ~allowed[:, 0, :]  # (A, V)
        t = tf.constant(0)
        while t < self.max_length and tf.size(active) > 0:
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(history, tf.TensorShape([None, None, None])), (maps, tf.TensorShape([None, None, None, None]))]
                + self._shrinking(active, token, log_prob, finished, length, allowed, banned, within, memory, state)
            )
            images = tf.size(active)
            logits, state, attention = self.decoder_step(memory, token, state, cells)
            log_probs = tf.reshape(self.next_word_log_probs(logits, t, tf.reshape(history, [images * hyps, -1])), [images, hyps, vocab_size])
            log_probs = tf.where(banned[:, None, :], -np.inf, log_probs)
            log_probs = tf.where(finished[:, :, None], pad_only[None, None, :], log_probs)
            unmet = tf.where(is_end[None, None, :], -np.inf, log_probs[:, :k])  # bank 0 may not end: it has not named the object
            late = (t + 1 >= within)[:, None, None]  # (A, 1, 1) the word must come by then: it names the subject
            stay = log_prob[:, :k, None] + tf.where(allowed | late, -np.inf, unmet)  # (A, K, V) bank 0 -> bank 0
            meet = log_prob[:, :k, None] + tf.where(allowed, unmet, -np.inf)  # bank 0 -> bank 1
            keep = log_prob[:, k:, None] + tf.where(allowed & ~finished[:, k:, None], -np.inf, log_probs[:, k:])  # bank 1 -> bank 1, once named
            lp0, index0 = tf.math.top_k(tf.reshape(stay, [images, k * vocab_size]), k=k)
            lp1, index1 = tf.math.top_k(tf.concat([tf.reshape(keep, [images, k * vocab_size]), tf.reshape(meet, [images, k * vocab_size])], axis=1), k=k)
            source = index1 // vocab_size  # < K: bank 1 beam `source`; >= K: bank 0 beam `source - K`
            parent = tf.concat([index0 // vocab_size, tf.where(source < k, source + k, source - k)], axis=1)  # (A, 2K)
            token_2d = tf.concat([index0 % vocab_size, index1 % vocab_size], axis=1)
            log_prob = tf.concat([lp0, lp1], axis=1)
            finished = tf.gather(finished, parent, batch_dims=1)
            length = tf.gather(length, parent, batch_dims=1) + tf.where(finished, 0.0, 1.0)
            history = tf.concat([tf.gather(history, parent, batch_dims=1), token_2d[:, :, None]], axis=2)
            step_maps = tf.gather(tf.reshape(attention, [images, hyps, cells]), parent, batch_dims=1)
            maps = tf.concat([tf.gather(maps, parent, batch_dims=1), step_maps[:, :, None, :]], axis=2)
            finished |= token_2d == self.vocab.end_id
            rows = tf.reshape(parent + tf.range(images)[:, None] * hyps, [images * hyps])
            state = [tf.gather(s, rows) for s in state]
            token = tf.reshape(token_2d, [images * hyps])
            done = tf.reduce_all(finished[:, k:], axis=1)  # (A,)
            if tf.reduce_any(done):
                results = self._write_results(results, done, active, history, log_prob, length, maps)
                (active, log_prob, finished, length, history, maps, allowed, banned, within), (memory, state, token) = self._drop_images(
                    done, hyps, (active, log_prob, finished, length, history, maps, allowed, banned, within), (memory, state, token)
                )
            t += 1
        history, log_prob, length, maps = self._write_results(results, tf.ones_like(active, tf.bool), active, history, log_prob, length, maps)
        met_log_prob = log_prob[:, k:]
        score = met_log_prob / tf.maximum(length[:, k:], 1.0) ** length_penalty
        order = tf.argsort(score, axis=1, direction="DESCENDING", stable=True)
        return (
            tf.gather(history[:, k:, :t], order, batch_dims=1),
            tf.gather(met_log_prob, order, batch_dims=1),
            tf.gather(score, order, batch_dims=1),
            tf.gather(maps[:, k:, :t], order, batch_dims=1),
        )

    def constrained(
        self,
        features: np.ndarray,
        allowed: np.ndarray,
        banned: np.ndarray | None = None,
        within: np.ndarray | None = None,
        beam_size: int = defaults.BEAM_SIZE,
        num_captions: int = 1,
        length_penalty: float = defaults.LENGTH_PENALTY,
    ) -> list[list[Hypothesis] | None]:
        """Per image, the best captions that contain an `allowed` (B, V) word among their first `within` (B,)
        words (default: anywhere) and no `banned` one; None where none was found."""
        check_search(beam_size, num_captions)
        banned = np.zeros_like(allowed, bool) if banned is None else banned
        within = np.full(len(allowed), self.max_length + 1, np.int32) if within is None else within
        history, log_prob, score, maps = (
            x.numpy()
            for x in self.compiled_constrained(
                tf.convert_to_tensor(features, tf.float32),
                tf.convert_to_tensor(allowed, tf.bool),
                tf.convert_to_tensor(banned, tf.bool),
                tf.convert_to_tensor(within, tf.int32),
                tf.constant(beam_size),
                tf.constant(float(length_penalty)),
            )
        )
        out: list[list[Hypothesis] | None] = []
        for b in range(len(history)):
            ranks = [j for j in range(beam_size) if np.isfinite(log_prob[b, j])][:num_captions]
            out.append([self._hypothesis(history[b, j], log_prob[b, j], score[b, j], maps[b, j]) for j in ranks] if ranks else None)
        return out

    # --- captions with tags and objects --------------------------------------------------------

    def plans(self, probabilities: np.ndarray) -> list[ObjectPlan | None]:
        """The object each image's caption must name (None: none is confident enough)."""
        return [plan_object(p, self.vocab, self.threshold) for p in probabilities]

    def caption(
        self, features: np.ndarray, beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, length_penalty: float = defaults.LENGTH_PENALTY
    ) -> list[list[Hypothesis]]:
        """As `SearchDecoder.caption`, with `tags` on every hypothesis and, if `name_objects`, confident objects named."""
        results = super().caption(features, beam_size, num_captions, length_penalty)
        probabilities = self.tagger.probabilities(features)
        if self.name_objects:
            results = self._name_objects(np.asarray(features), probabilities, results, beam_size, num_captions, length_penalty)
        for hyps, p in zip(results, probabilities):
            tags = self.tagger.tags(p, self.top_k)
            for h in hyps:
                h.tags = tags
        return results

    def _name_objects(
        self, features: np.ndarray, probabilities: np.ndarray, results: list[list[Hypothesis]], beam_size: int, num_captions: int, length_penalty: float
    ) -> list[list[Hypothesis]]:
        plans = self.plans(probabilities)
        animals = animal_words()
        for i, plan in enumerate(plans):
            if plan is None:
                continue
            said = set(results[i][0].caption.split())
            if said & set(plan.anchors):
                continue  # named already: only the borrowed word and articles change, below
            # Things (a ball, a bicycle) are mostly what the people in a photo hold or ride, while an
            # animal or a food is the photo's subject; and when the caption names another animal
            # that the classifier finds plausible too, the classifier may be the one that is wrong.
            # Things, and animals or foods in that case, need the classifier to be sure.
            plausible = max((word_probability(probabilities[i], w) for w in said & animals), default=0.0) >= self.plausible
            if (not (plan.animal or plan.food) or plausible) and plan.probability < self.sure:
                plans[i] = None
        missing = [i for i, plan in enumerate(plans) if plan is not None and not set(plan.anchors) & set(results[i][0].caption.split())]
        if missing:
            allowed = np.zeros((len(missing), self.decoder.config.vocab_size), bool)
            banned = np.zeros_like(allowed)
            within = np.full(len(missing), self.max_length + 1, np.int32)
            for row, i in enumerate(missing):
                plan = plans[i]
                assert plan is not None
                allowed[row, list(plan.token_ids)] = True
                # An animal is the photo's subject, and so is a food (a bowl of strawberries, a pizza);
                # any other thing may be what a person holds or rides.
                if plan.animal or plan.food:
                    within[row] = self.within
                    if plan.anchors[0] not in PEOPLE_ANIMALS:
                        banned[row, self._people_ids] = True
                        banned[row, self._animal_ids] = True  # the allowed words stay allowed
            named_all = self.constrained(features[missing], allowed, banned, within, max(beam_size, 2), num_captions, length_penalty)
            for i, named in zip(missing, named_all):
                if named is not None:
                    results[i] = named
        for hyps, plan in zip(results, plans):
            if plan is not None:  # the borrowed noun replaces its hypernym; articles and plurals agree either way
                for j, h in enumerate(hyps):
                    caption = substitute(h.caption, plan.anchors, (plan.noun, plan.plural))
                    hyps[j] = dataclasses.replace(h, caption=caption, attention=realign(h.attention, h.caption.split(), caption.split()))
        return results


def realign(attention: np.ndarray | None, old: list[str], new: list[str]) -> np.ndarray | None:
    """Attention rows (one per word of `old`) for the words of `new`: a replacing word takes the row of the word it replaced."""
    if attention is None or old == new:
        return attention
    rows: list[int] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            rows.extend(range(i1, i2))
        elif op == "replace":  # word for word, the extra new words on the last replaced one
            rows.extend(min(i1 + k, i2 - 1) for k in range(j2 - j1))
        elif op == "insert":  # an inserted article looks where its noun does
            rows.extend([min(i1, len(old) - 1)] * (j2 - j1))
    return attention[rows]
