"""Scores: WER and CER (jiwer) on normalized text, BLEU and chrF (sacrebleu)."""
from __future__ import annotations

import jiwer
import sacrebleu

from lib.text import normalize_for_scoring


def scored_pairs(references: list[str], hypotheses: list[str]) -> tuple[list[str], list[str]]:
    """Normalized (reference, hypothesis) pairs, leaving out references that normalize to nothing."""
    pairs = [(normalize_for_scoring(r), normalize_for_scoring(h)) for r, h in zip(references, hypotheses, strict=True)]
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
