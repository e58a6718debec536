"""Scores: WER and CER (jiwer) on normalized text, BLEU and chrF (sacrebleu), and the code-switching views.

The code-switching views come from one word alignment of the whole utterance, as PIER does (Ugan et al., 2025), never
from aligning each language separately: each reference word carries its substitution or deletion, and an insertion is
charged to the reference word it comes before (the last word when it comes at the end). A view is a set of reference
words, and its error rate is (errors charged to its words) / (its words):

- `wer_vi`, `wer_en`: the Vietnamese words, the English words;
- `english_insertions`: English words inside utterances that also hold Vietnamese (PIER's points of interest);
- `switch_points`: the words on either side of a change of language (words tagged `x` are skipped over).

With every word in the view the rate is the utterance's WER exactly. Intervals are 95 % percentile bootstraps over
utterances: the same resampled utterance sets for every view, seeded, so a rerun gives the same interval.
Beware: `jiwer.mer` is the *match* error rate, not a mixed error rate; nothing here uses it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import jiwer
import numpy as np
import pandas as pd
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from lib import text

VIEWS = ("wer", "wer_vi", "wer_en", "english_insertions", "switch_points")
VIEW_LABELS = {"wer": "all words", "wer_vi": "Vietnamese words", "wer_en": "English words",
               "english_insertions": "English insertions", "switch_points": "switch points"}
CMI_BINS = ("0", "(0, 15]", "(15, 30]", "(30, 50]")  # code-mixing index: 0 = one language, 50 = evenly mixed
TOP_SUBSTITUTIONS = 20  # the most frequent substitutions a metrics file keeps and the report shows


@dataclass
class Score:
    """A corpus score with its 95 % bootstrap interval; `count` is its denominator (words, characters, segments)."""

    value: float | None
    low: float | None
    high: float | None
    count: int

    def to_dict(self) -> dict:
        return {"value": _round(self.value), "ci95": [_round(self.low), _round(self.high)], "count": self.count}


# --- plain corpus scores ------------------------------------------------------------------------------------------

def scored_pairs(references: list[str], hypotheses: list[str]) -> tuple[list[str], list[str]]:
    """Normalized (reference, hypothesis) pairs, leaving out references that normalize to nothing."""
    pairs = [(text.normalize_for_scoring(r), text.normalize_for_scoring(h))
             for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r]
    return [r for r, _ in kept], [h for _, h in kept]


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate in percent on normalized text."""
    refs, hyps = scored_pairs(references, hypotheses)
    return 100.0 * jiwer.wer(refs, hyps) if refs else float("nan")


def cer(references: list[str], hypotheses: list[str]) -> float:
    refs, hyps = scored_pairs(references, hypotheses)
    return 100.0 * jiwer.cer(refs, hyps) if refs else float("nan")


def bleu(references: list[str], hypotheses: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, case-sensitive) on the raw text."""
    return sacrebleu.corpus_bleu(hypotheses, [references]).score


def chrf(references: list[str], hypotheses: list[str]) -> float:
    return sacrebleu.corpus_chrf(hypotheses, [references]).score


# --- the alignment and its views ----------------------------------------------------------------------------------

def tagged_words(transcript: str, lang_tags: list[str]) -> tuple[list[str], list[str]]:
    """The normalized words of a transcript and the tag of each: a raw word that normalizes to several words
    ("e-mail" -> "e mail") gives its tag to each, one that normalizes to nothing ("-") drops out."""
    raw = text.words(transcript)
    if len(lang_tags) != len(raw):
        raise ValueError(f"{len(lang_tags)} lang_tags for {len(raw)} words in {transcript!r}")
    words, tags = [], []
    for word, tag in zip(raw, lang_tags):
        pieces = text.normalize_for_scoring(word).split()
        words += pieces
        tags += [tag] * len(pieces)
    return words, tags


def switch_point_mask(tags: list[str]) -> np.ndarray:
    """True for each `vi`/`en` word whose nearest `vi`/`en` neighbour (before or after) is in the other language."""
    mask = np.zeros(len(tags), dtype=bool)
    spoken = [i for i, t in enumerate(tags) if t in ("vi", "en")]
    for a, b in zip(spoken, spoken[1:]):
        if tags[a] != tags[b]:
            mask[a] = mask[b] = True
    return mask


def charged_errors(reference_length: int, chunks) -> tuple[np.ndarray, Counter]:
    """Errors charged to each reference word by one utterance's jiwer alignment, and the S/D/I counts."""
    charged = np.zeros(reference_length, dtype=np.int64)
    counts: Counter = Counter()
    for chunk in chunks:
        if chunk.type in ("substitute", "delete"):
            charged[chunk.ref_start_idx:chunk.ref_end_idx] += 1
            counts[chunk.type] += chunk.ref_end_idx - chunk.ref_start_idx
        elif chunk.type == "insert":
            charged[min(chunk.ref_start_idx, reference_length - 1)] += chunk.hyp_end_idx - chunk.hyp_start_idx
            counts["insert"] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return charged, counts


@dataclass
class TranscriptScores:
    """Everything `transcript_scores` measures: corpus scores, WER per code-mixing bin, one row per utterance, and
    the substitutions (reference word, hypothesis word, reference tag) with their counts."""

    scores: dict[str, Score]
    by_cmi: list[dict]
    utterances: pd.DataFrame
    substitutions: Counter

    def to_dict(self) -> dict:
        return {"metrics": {k: s.to_dict() for k, s in self.scores.items()}, "by_cmi": self.by_cmi,
                "errors": {k: int(self.utterances[k].sum()) for k in
                           ("reference_words", "substitutions", "deletions", "insertions")}}


def transcript_scores(references: list[str], hypotheses: list[str], lang_tags: list[list[str]],
                      resamples: int = 1000, seed: int = 0) -> TranscriptScores:
    """WER, CER and the code-switching views (module docstring) with bootstrap intervals.

    `lang_tags` holds one tag per raw reference word. References that normalize to nothing are left out of every
    score (their row says `scored` False)."""
    rows, view_stats, char_stats, substitutions = [], [], [], Counter()
    for reference, hypothesis, tags in zip(references, hypotheses, lang_tags, strict=True):
        words, word_tags = tagged_words(reference, tags)
        hyp_words = text.normalize_for_scoring(hypothesis).split()
        cmi = text.code_mixing_index(tags)
        row = {"reference_words": len(words), "hypothesis_words": len(hyp_words), "substitutions": 0,
               "deletions": 0, "insertions": 0, "errors": 0, "wer": None, "code_mixing_index": round(cmi, 1),
               "cmi_bin": cmi_bin(cmi), "scored": bool(words)}
        if words:
            alignment = jiwer.process_words(" ".join(words), " ".join(hyp_words))
            charged, counts = charged_errors(len(words), alignment.alignments[0])
            row.update(substitutions=counts["substitute"], deletions=counts["delete"], insertions=counts["insert"],
                       errors=int(charged.sum()), wer=round(100.0 * charged.sum() / len(words), 2))
            for pair in _substituted_pairs(alignment, word_tags):
                substitutions[pair] += 1
            view_stats.append(_view_stats(charged, np.array(word_tags)))
            chars = jiwer.process_characters(" ".join(words), " ".join(hyp_words))
            char_stats.append([chars.substitutions + chars.deletions + chars.insertions, len(" ".join(words))])
        rows.append(row)
    utterances = pd.DataFrame(rows)
    scored = utterances[utterances.scored]
    stats = np.array(view_stats, dtype=np.float64).reshape(len(view_stats), len(VIEWS), 2)
    resampled = _resample_indices(len(scored), resamples, seed)
    scores = {view: _ratio_score(stats[:, v, :], resampled) for v, view in enumerate(VIEWS)}
    scores["cer"] = _ratio_score(np.array(char_stats, dtype=np.float64).reshape(-1, 2), resampled)
    by_cmi = []
    for label in CMI_BINS:
        in_bin = (scored.cmi_bin == label).to_numpy()
        bin_stats = stats[in_bin, 0, :]
        score = _ratio_score(bin_stats, _resample_indices(len(bin_stats), resamples, seed))
        by_cmi.append({"bin": label, "segments": int(in_bin.sum()), **score.to_dict()})
    ordered = {k: scores[k] for k in ("wer", "cer", *VIEWS[1:])}
    return TranscriptScores(ordered, by_cmi, utterances, substitutions)


def cmi_bin(cmi: float) -> str:
    if cmi <= 0:
        return CMI_BINS[0]
    return CMI_BINS[1] if cmi <= 15 else CMI_BINS[2] if cmi <= 30 else CMI_BINS[3]


def _view_stats(charged: np.ndarray, tags: np.ndarray) -> list[list[float]]:
    """(errors, words) for each view of one utterance."""
    mixed = "vi" in tags and "en" in tags
    masks = {"wer": np.ones(len(tags), dtype=bool), "wer_vi": tags == "vi", "wer_en": tags == "en",
             "english_insertions": (tags == "en") & mixed, "switch_points": switch_point_mask(list(tags))}
    return [[charged[masks[v]].sum(), masks[v].sum()] for v in VIEWS]


def _substituted_pairs(alignment, tags: list[str]) -> list[tuple[str, str, str]]:
    """(reference word, hypothesis word, reference word's tag) for each substitution."""
    ref, hyp = alignment.references[0], alignment.hypotheses[0]
    return [(ref[c.ref_start_idx + k], hyp[c.hyp_start_idx + k], tags[c.ref_start_idx + k])
            for c in alignment.alignments[0] if c.type == "substitute" for k in range(c.ref_end_idx - c.ref_start_idx)]


# --- translations -------------------------------------------------------------------------------------------------

@dataclass
class TranslationScores:
    scores: dict[str, Score]
    signatures: dict[str, str]
    utterances: pd.DataFrame

    def to_dict(self) -> dict:
        return {"metrics": {k: {**s.to_dict(), "signature": self.signatures[k]} for k, s in self.scores.items()}}


def translation_scores(references: list[str], hypotheses: list[str], resamples: int = 1000,
                       seed: int = 0) -> TranslationScores:
    """Corpus BLEU and chrF (sacrebleu defaults, raw text) with bootstrap intervals and signatures, and the sentence
    scores of each utterance."""
    resampled = _resample_indices(len(references), resamples, seed)
    scores, signatures = {}, {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        corpus = metric.corpus_score(hypotheses, [references])
        # Private calls, on purpose: sacrebleu's public bootstrap (`corpus_score(n_bootstrap=)`) draws resamples from
        # its own seed, while these intervals resample the same utterances as every other metric, from the run's seed.
        stats = np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype=np.float64)
        samples = [metric._compute_score_from_stats(stats[i].sum(0)).score for i in resampled]
        low, high = np.percentile(samples, [2.5, 97.5]) if samples else (None, None)
        scores[name] = Score(corpus.score, low, high, len(references))
        signatures[name] = str(metric.get_signature())
    utterances = pd.DataFrame({
        "sentence_bleu": [round(sacrebleu.sentence_bleu(h, [r]).score, 2) for r, h in zip(references, hypotheses)],
        "sentence_chrf": [round(sacrebleu.sentence_chrf(h, [r]).score, 2) for r, h in zip(references, hypotheses)]})
    return TranslationScores(scores, signatures, utterances)


def paired_difference(references: list[str], baseline: list[str], candidate: list[str], metric: str,
                      resamples: int = 1000, seed: int = 0) -> Score:
    """`candidate`'s corpus WER or BLEU (`metric`) minus `baseline`'s on the same utterances, with a 95 % paired
    bootstrap interval: both scored on each resampled set of utterances, so what the utterances share cancels out."""
    if metric == "wer":
        pairs = [(text.normalize_for_scoring(r), text.normalize_for_scoring(a), text.normalize_for_scoring(b))
                 for r, a, b in zip(references, baseline, candidate, strict=True)]
        kept = [(r, (a, b)) for r, a, b in pairs if r]  # references that normalize to nothing are not scored

        def counts(ref, hyp):
            found = jiwer.process_words(ref, hyp)
            return [found.substitutions + found.deletions + found.insertions, len(ref.split())]

        stats = [np.array([counts(r, hyps[side]) for r, hyps in kept], dtype=np.float64) for side in (0, 1)]

        def score(side_stats, rows):
            return 100.0 * side_stats[rows, 0].sum() / side_stats[rows, 1].sum()
    else:
        bleu = BLEU()
        stats = [np.array(bleu._extract_corpus_statistics(h, [references]), dtype=np.float64)
                 for h in (baseline, candidate)]  # private, as in `translation_scores`

        def score(side_stats, rows):
            return bleu._compute_score_from_stats(side_stats[rows].sum(0)).score
    every = np.arange(len(stats[0]))
    value = score(stats[1], every) - score(stats[0], every)
    samples = [score(stats[1], rows) - score(stats[0], rows) for rows in _resample_indices(len(every), resamples, seed)]
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (None, None)
    return Score(value, low, high, len(every))


# --- bootstrap ----------------------------------------------------------------------------------------------------

def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` rows of n utterance indices drawn with replacement (seeded)."""
    if n == 0 or resamples < 1:
        return np.zeros((0, n), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _ratio_score(stats: np.ndarray, resampled: np.ndarray) -> Score:
    """100 * sum(errors) / sum(units) over utterances (`stats` rows: errors, units), with its bootstrap interval."""
    errors, units = stats[:, 0], stats[:, 1]
    total = units.sum()
    if total == 0:
        return Score(None, None, None, 0)
    value = 100.0 * errors.sum() / total
    if len(resampled) == 0:
        return Score(value, None, None, int(total))
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = 100.0 * errors[resampled].sum(1) / units[resampled].sum(1)
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return Score(value, low, high, int(total))


def _round(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 2)


def substitution_table(substitutions: Counter, top: int = TOP_SUBSTITUTIONS) -> pd.DataFrame:
    """The most frequent (reference word -> hypothesis word) substitutions, with the reference word's language."""
    rows = [{"reference": r, "hypothesis": h, "count": n, "reference_language": tag}
            for (r, h, tag), n in substitutions.most_common(top)]
    return pd.DataFrame(rows, columns=["reference", "hypothesis", "count", "reference_language"])



# --- hallucination --------------------------------------------------------------------------------------------------

LOOP_REPEATS = 3  # an n-gram said this many times in a row is a loop ("em em em", "I will go I will go I will go")
LOOP_MAX_N = 4
RUNAWAY_RATIO = 2.0  # a hypothesis over twice its reference's words, and RUNAWAY_SLACK more, ran away
RUNAWAY_SLACK = 5


def loops(hypothesis: str) -> bool:
    """Whether the normalized hypothesis repeats some 1- to 4-word sequence LOOP_REPEATS times in a row."""
    words = text.normalize_for_scoring(hypothesis).split()
    for n in range(1, LOOP_MAX_N + 1):
        for start in range(len(words) - n * LOOP_REPEATS + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, LOOP_REPEATS)):
                return True
    return False


def runs_away(reference: str, hypothesis: str) -> bool:
    """Whether the hypothesis has far more words than its reference (over twice as many, and 5 more)."""
    ref, hyp = (len(text.normalize_for_scoring(t).split()) for t in (reference, hypothesis))
    return hyp > RUNAWAY_RATIO * ref + RUNAWAY_SLACK


def hallucinations(references: list[str], hypotheses: list[str]) -> dict:
    """How many hypotheses loop or run away from their reference, and the share that does either (percent)."""
    looping = [loops(h) for h in hypotheses]
    running = [runs_away(r, h) for r, h in zip(references, hypotheses, strict=True)]
    either = [a or b for a, b in zip(looping, running)]
    return {"segments": len(hypotheses), "loops": sum(looping), "runs_away": sum(running),
            "share": round(100 * sum(either) / len(hypotheses), 2) if hypotheses else None,
            "examples": [h for h, flagged in zip(hypotheses, either) if flagged][:3]}
