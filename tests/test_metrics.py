"""Metrics pinned on hand-worked examples, and checked against jiwer and sacrebleu called directly."""
import math

import jiwer
import pytest
import sacrebleu

from lib import metrics, text

# A code-switched sentence: "em" -> "anh" (substitution, vi), "report" dropped (deletion, en), "ạ" added at the end
# (an insertion, charged to the last word "nhé", vi). 3 errors over 8 words.
MIXED_REF = "Chiều nay em gửi report cho manager nhé"
MIXED_TAGS = "vi vi vi vi en vi en vi".split()
MIXED_HYP = "chiều nay anh gửi cho manager nhé ạ"
# Vietnamese only: a lost tone mark is an error ("đẹp" -> "đep"). 1 error over 5 words.
VI_REF = "Hôm nay trời đẹp quá!"
VI_TAGS = ["vi"] * 5
VI_HYP = "hôm nay trời đep quá"


def test_normalized_wer_and_cer_agree_with_jiwer():
    refs, hyps = [MIXED_REF, VI_REF], [MIXED_HYP, VI_HYP]
    normalized_refs = [text.normalize_for_scoring(r) for r in refs]
    normalized_hyps = [text.normalize_for_scoring(h) for h in hyps]
    assert metrics.wer(refs, hyps) == pytest.approx(100 * 4 / 13)
    assert metrics.wer(refs, hyps) == pytest.approx(100 * jiwer.wer(normalized_refs, normalized_hyps))
    assert metrics.cer(refs, hyps) == pytest.approx(100 * jiwer.cer(normalized_refs, normalized_hyps))
    # case, punctuation and Unicode form do not count; diacritics do
    assert metrics.wer(["Đà Nẵng, OK?"], ["đà na\u0306\u0303ng ok"]) == 0.0
    assert metrics.wer(["Đà Nẵng"], ["Đà Nang"]) == 50.0


def test_code_switching_views_on_a_hand_worked_sentence():
    result = metrics.transcript_scores([MIXED_REF], [MIXED_HYP], [MIXED_TAGS], resamples=0)
    values = {k: s.value for k, s in result.scores.items()}
    assert values["wer"] == pytest.approx(100 * 3 / 8)
    assert values["wer_vi"] == pytest.approx(100 * 2 / 6)  # "em" substituted + the insertion charged to "nhé"
    assert values["wer_en"] == pytest.approx(100 * 1 / 2)  # "report" deleted, "manager" right
    assert values["english_insertions"] == pytest.approx(50.0)
    # switch points: gửi|report|cho|manager|nhé; errors on "report" and "nhé"
    assert values["switch_points"] == pytest.approx(100 * 2 / 5)
    assert result.scores["switch_points"].count == 5
    row = result.utterances.iloc[0]
    assert (row.substitutions, row.deletions, row.insertions, row.errors) == (1, 1, 1, 3)
    assert row.code_mixing_index == 25.0 and row.cmi_bin == "(15, 30]"
    assert dict(result.substitutions) == {("em", "anh", "vi"): 1}


def test_views_over_a_corpus_sum_errors_and_words_over_utterances():
    result = metrics.transcript_scores([MIXED_REF, VI_REF], [MIXED_HYP, VI_HYP], [MIXED_TAGS, VI_TAGS],
                                       resamples=200, seed=3)
    values = {k: s.value for k, s in result.scores.items()}
    assert values["wer"] == pytest.approx(metrics.wer([MIXED_REF, VI_REF], [MIXED_HYP, VI_HYP]))
    assert values["cer"] == pytest.approx(metrics.cer([MIXED_REF, VI_REF], [MIXED_HYP, VI_HYP]))
    assert values["wer_vi"] == pytest.approx(100 * 3 / 11)
    assert values["english_insertions"] == pytest.approx(50.0)  # the Vietnamese-only sentence has no English
    bins = {b["bin"]: b for b in result.by_cmi}
    assert bins["0"]["value"] == 20.0 and bins["0"]["segments"] == 1 and bins["0"]["count"] == 5
    assert bins["(15, 30]"]["value"] == 37.5
    assert bins["(30, 50]"]["segments"] == 0 and bins["(30, 50]"]["value"] is None
    assert result.to_dict()["errors"] == {"reference_words": 13, "substitutions": 2, "deletions": 1,
                                          "insertions": 1}


def test_insertions_are_charged_to_the_next_reference_word_or_the_last():
    alignment = jiwer.process_words("a b c", "x a b c y z")
    charged, counts = metrics.charged_errors(3, alignment.alignments[0])
    assert charged.tolist() == [1, 0, 2] and counts["insert"] == 3


def test_tagged_words_follow_normalization():
    words, tags = metrics.tagged_words("Gửi e-mail – cho anh.", ["vi", "en", "x", "vi", "vi"])
    assert words == ["gửi", "e", "mail", "cho", "anh"] and tags == ["vi", "en", "en", "vi", "vi"]
    with pytest.raises(ValueError, match="2 lang_tags for 3 words"):
        metrics.tagged_words("a b c", ["vi", "vi"])


def test_switch_points_skip_words_in_neither_language():
    assert metrics.switch_point_mask(["vi", "x", "en", "en", "vi", "vi"]).tolist() == [
        True, False, True, True, True, False]
    assert not metrics.switch_point_mask(["vi", "vi", "x"]).any()


def test_bootstrap_intervals_are_seeded_and_bracket_the_value():
    refs = [MIXED_REF] * 20 + [VI_REF] * 20
    hyps = [MIXED_HYP] * 10 + [MIXED_REF] * 10 + [VI_HYP] * 10 + [VI_REF] * 10
    tags = [MIXED_TAGS] * 20 + [VI_TAGS] * 20
    first = metrics.transcript_scores(refs, hyps, tags, resamples=500, seed=7).scores["wer"]
    again = metrics.transcript_scores(refs, hyps, tags, resamples=500, seed=7).scores["wer"]
    assert (first.low, first.high) == (again.low, again.high)
    assert first.low < first.value < first.high
    same = metrics.transcript_scores([VI_REF] * 10, [VI_HYP] * 10, [VI_TAGS] * 10, resamples=100).scores["wer"]
    assert same.low == same.high == same.value == 20.0  # every resample is the same corpus


def test_bleu_and_chrf_agree_with_sacrebleu_and_keep_the_signature():
    refs = ["the cat sat on the mat today", "I will send the report to the manager this afternoon",
            "Is the deadline on Friday?"]
    hyps = ["the cat sat on the mat", "I send report to manager this afternoon", "the deadline is Friday"]
    result = metrics.translation_scores(refs, hyps, resamples=300, seed=1)
    assert result.scores["bleu"].value == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert result.scores["chrf"].value == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert result.scores["bleu"].low <= result.scores["bleu"].value <= result.scores["bleu"].high
    assert "tok:13a" in result.signatures["bleu"] and "nrefs:1" in result.signatures["bleu"]
    # hand-worked: every n-gram of the first hypothesis matches; brevity penalty exp(1 - 7/6)
    assert result.utterances.sentence_bleu[0] == pytest.approx(100 * math.exp(1 - 7 / 6), abs=0.01)
    perfect = metrics.translation_scores(["a b c d e"] * 3, ["a b c d e"] * 3, resamples=50).scores["bleu"]
    assert perfect.value == perfect.low == perfect.high == pytest.approx(100.0)  # resamples rebuilt from the stats


def test_empty_references_are_left_out_and_empty_hypotheses_count_as_deletions():
    result = metrics.transcript_scores(["...", "hai ba"], ["gì", ""], [["x"], ["vi", "vi"]], resamples=0)
    assert result.utterances.scored.tolist() == [False, True]
    assert result.scores["wer"].value == 100.0 and result.scores["wer"].count == 2


def test_substitution_table_names_the_language_of_the_reference_word():
    result = metrics.transcript_scores([MIXED_REF, MIXED_REF], ["chiều nay em gửi ripo cho manager nhé"] * 2,
                                       [MIXED_TAGS] * 2, resamples=0)
    table = metrics.substitution_table(result.substitutions)
    assert table.to_dict("records") == [{"reference": "report", "hypothesis": "ripo", "count": 2,
                                         "reference_language": "en"}]


def test_loops_are_runs_of_a_repeated_word_sequence():
    assert metrics.loops("em em em")  # one word three times
    assert metrics.loops("hôm nay I will go I will go I will go nhé")  # three words, three times in a row
    assert not metrics.loops("em em cảm ơn")  # twice is speech ("từ từ"), not a loop
    assert not metrics.loops("I will go, you will go, they will go")  # repeated words, not in a row
    assert metrics.loops("Cảm ơn. Cảm ơn! Cảm ơn?")  # punctuation does not hide a loop


def test_runaway_hypotheses_and_the_hallucination_share():
    assert metrics.runs_away("chào anh", "chào anh " + "a b " * 5)  # 12 words for 2
    assert not metrics.runs_away("chào anh", "chào anh và chị")
    found = metrics.hallucinations(["xin chào", "cảm ơn anh", "tạm biệt"],
                                   ["xin chào", "cảm ơn cảm ơn cảm ơn cảm ơn", "tạm biệt " + "bye " * 20])
    assert found == {"segments": 3, "loops": 2, "runs_away": 1, "share": 66.67,
                     "examples": ["cảm ơn cảm ơn cảm ơn cảm ơn", "tạm biệt " + "bye " * 20]}


def test_a_paired_difference_is_the_difference_of_the_corpus_scores_with_an_interval_around_it():
    references = ["xin chào các bạn", "tôi đi học", "hôm nay trời đẹp", "em gửi report nhé"] * 5
    before = ["xin chào bạn", "tôi đi", "hôm nay trời đẹp", "em gửi report nhé"] * 5
    after = ["xin chào các bạn", "tôi đi học", "hôm nay đẹp", "em gửi report nhé"] * 5
    found = metrics.paired_difference(references, before, after, "wer", resamples=300, seed=1)
    assert found.value == pytest.approx(metrics.wer(references, after) - metrics.wer(references, before))
    assert found.low < found.value < found.high and found.count == 20
    same = metrics.paired_difference(references, before, before, "wer", resamples=300, seed=1)
    assert (same.value, same.low, same.high) == (0, 0, 0)
    english = ["I will send the report today", "the cat sat on the mat"] * 10
    worse = metrics.paired_difference(english, english, ["I send report today", "the cat sat on the mat"] * 10,
                                      "bleu", resamples=300, seed=1)
    assert worse.high < 0 and worse.value == pytest.approx(
        metrics.bleu(english, ["I send report today", "the cat sat on the mat"] * 10) - 100)
