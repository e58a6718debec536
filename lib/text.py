"""Text: Unicode NFC, normalization for scoring, word-level language tags, and the code-mixing index.

Language tagging (for transcripts without `lang_tags`) reads each word in three steps:
1. Vietnamese letters or tone marks (đ ă â ê ô ơ ư, á à ả ã ạ ...) make it `vi`; no letter at all makes it `x`.
2. A word that is not a well-formed Vietnamese syllable (onset + rhyme, and a stop-final rhyme carries the sắc or nặng tone)
   is `en`: "meeting", "deadline", "chat", "app". All-caps acronyms ("AI", "KPI") are `en` too.
3. A well-formed unmarked syllable that is also an English word ("to", "can", "cho", "anh", "the") is ambiguous. It is scored
   by how much more frequent it is in English than in Vietnamese (wordfreq Zipf values stored in
   `lib/data/ambiguous_words.tsv`) plus a pull from each neighbour's language, and takes the sign of the score.
   An unmarked syllable that is no English word is `vi`.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from lib import atomic

LANG_TAGS = ("vi", "en", "x")
AMBIGUOUS_WORDS = Path(__file__).parent / "data" / "ambiguous_words.tsv"
NEIGHBOUR_PULL = 1.5  # Zipf points each neighbour adds towards its own language

_TONES = {"\u0300": "huyền", "\u0301": "sắc", "\u0303": "ngã", "\u0309": "hỏi", "\u0323": "nặng"}
_VI_ONLY = set("đăâêôơư")
_VI_ALPHABET = set("abcdeghiklmnopqrstuvxy") | _VI_ONLY
_ONSETS = sorted(
    "b c ch d đ g gh gi h k kh l m n ng ngh nh p ph qu r s t th tr v x".split(), key=len, reverse=True
) + [""]
_RHYMES = set(
    """
    a ai ao au ay ac ach am an ang anh ap at
    ăc ăm ăn ăng ăp ăt
    âc âm ân âng âp ât âu ây
    e ec em en eng eo ep et
    ê êch êm ên ênh êp êt êu
    i ia ich iêc iêm iên iêng iêp iêt iêu im in inh ip it iu
    o oa oac oach oai oan oang oanh oao oap oat oay oăc oăm oăn oăng oăt oc oe oem oen oeo oet oi om on ong
    oo ooc oong op ot
    ô ôc ôi ôm ôn ông ôp ôt
    ơ ơi ơm ơn ơp ơt
    u ua uân uâng uât uây uc uê uênh ui um un ung uơ uôc uôi uôm uôn uông uôt up ut uy uya uych uyên uyêt uynh uyt
    uyu
    ư ưa ưc ưi ưm ưn ưng ươc ươi ươm ươn ương ươp ươt ươu ưt ưu
    y yên yêt yêu ych ynh yt
    """.split()
)
_STOP_FINALS = ("c", "ch", "p", "t")
_PUNCT_EDGES = re.compile(r"^[^\w]+|[^\w]+$")
_APOSTROPHES = re.compile(r"['’‘`]")
_SCORING_PUNCT = re.compile(r"[^\w\s.,]|_|(?<!\d)[.,]|[.,](?!\d)")  # keeps "." and "," only between digits


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def words(text: str) -> list[str]:
    """Whitespace-separated words: the unit `lang_tags` counts."""
    return text.split()


def normalize_for_scoring(text: str) -> str:
    """NFC, lowercase, punctuation removed (apostrophes dropped, other marks become spaces), diacritics kept.

    A mark between digits stays ("3,5", "1.000"), so numbers are not split into two words.
    """
    text = nfc(text).lower()
    text = _APOSTROPHES.sub("", text)
    text = _SCORING_PUNCT.sub(" ", text)
    return " ".join(text.split())


def ngram_overlap(known: list[str], texts: list[str], n: int = 3) -> float | None:
    """Percent of the word n-grams of `texts` (normalized for scoring) that also occur in `known`: near 100 for sentences
    built from the same templates or prompts as `known`, low for new wording. None when `texts` has no n-gram."""
    def grams(text: str) -> list[tuple[str, ...]]:
        tokens = normalize_for_scoring(text).split()
        return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]

    seen = {g for text in known for g in grams(text)}
    found = [g in seen for text in texts for g in grams(text)]
    return round(100 * sum(found) / len(found), 1) if found else None


def split_tone(syllable: str) -> tuple[str, str | None]:
    """("Việt" ->) ("viêt", "nặng"): the lowercase letters without the tone mark, and the tone's name."""
    decomposed = unicodedata.normalize("NFD", syllable.lower())
    tone = next((_TONES[c] for c in decomposed if c in _TONES), None)
    base = "".join(c for c in decomposed if c not in _TONES)
    return unicodedata.normalize("NFC", base), tone


def is_vietnamese_syllable(word: str) -> bool:
    """True if `word` is spelled like one Vietnamese syllable (tone rules for stop finals included)."""
    base, tone = split_tone(word)
    if not base or not set(base) <= _VI_ALPHABET:
        return False
    for onset in _ONSETS:
        if not base.startswith(onset):
            continue
        rhyme = base[len(onset):]
        if onset == "gi" and rhyme in ("", "n", "ng", "t", "p", "c", "m", "u"):  # gì, gìn, giữ...: the i is the vowel
            rhyme = "i" + rhyme
        if rhyme in _RHYMES and (not rhyme.endswith(_STOP_FINALS) or tone in ("sắc", "nặng")):
            return True
    return False


@lru_cache(maxsize=1)
def ambiguous_words() -> dict[str, float]:
    """English words spelled like unmarked Vietnamese syllables -> Zipf(en) - Zipf(vi) (positive: more English)."""
    table = {}
    for line in AMBIGUOUS_WORDS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            word, zipf_en, zipf_vi = line.split("\t")
            table[word] = float(zipf_en) - float(zipf_vi)
    return table


def tag_words(tokens: list[str]) -> list[str]:
    """One tag per token: `vi`, `en` or `x` (see the module docstring for the rules)."""
    first = [_tag_alone(t) for t in tokens]
    lean = ambiguous_words()
    tags = []
    for i, (token, tag) in enumerate(zip(tokens, first)):
        if tag != "?":
            tags.append(tag)
            continue
        score = lean[_letters(token).lower()]
        for j in (i - 1, i + 1):
            if 0 <= j < len(tokens):
                neighbour = first[j] if first[j] != "?" else ("en" if lean[_letters(tokens[j]).lower()] > 0 else "vi")
                score += {"en": NEIGHBOUR_PULL, "vi": -NEIGHBOUR_PULL}.get(neighbour, 0.0)
        tags.append("en" if score > 0 else "vi")
    return tags


def tag_transcript(transcript: str) -> list[str]:
    return tag_words(words(transcript))


def _letters(token: str) -> str:
    return _APOSTROPHES.sub("", _PUNCT_EDGES.sub("", nfc(token)))


def _tag_alone(token: str) -> str:
    """The tag a token gets without context; '?' for an ambiguous one."""
    core = _letters(token)
    if not any(c.isalpha() for c in core):
        return "x"
    lower = core.lower()
    base, tone = split_tone(lower)
    if tone or set(base) & _VI_ONLY:
        return "vi"
    if any(c.isdigit() for c in core) or not core.replace("-", "").isalpha():
        return "x"
    if len(core) > 1 and core.isupper():
        return "en"
    if not is_vietnamese_syllable(lower):
        return "en"
    return "?" if lower in ambiguous_words() else "vi"


def code_mixing_index(tags: list[str]) -> float:
    """Gambäck & Das' utterance CMI in [0, 50] for two languages: 100 * (1 - dominant / language words); 0 if none."""
    counted = [t for t in tags if t != "x"]
    if not counted:
        return 0.0
    dominant = max(counted.count(lang) for lang in ("vi", "en"))
    return 100.0 * (1.0 - dominant / len(counted))


def build_ambiguous_words(out: Path = AMBIGUOUS_WORDS, top: int = 50_000) -> int:
    """Rebuild the ambiguous-word table from wordfreq (`pip install wordfreq`; not a runtime dependency)."""
    from importlib.metadata import version

    import wordfreq

    rows = []
    for word in wordfreq.top_n_list("en", top):
        if word.isascii() and word.isalpha() and is_vietnamese_syllable(word):
            rows.append(f"{word}\t{wordfreq.zipf_frequency(word, 'en'):.2f}\t{wordfreq.zipf_frequency(word, 'vi'):.2f}")
    header = (f"# English words spelled like unmarked Vietnamese syllables, with wordfreq {version('wordfreq')} Zipf "
              f"frequencies.\n# Made by: python -m lib.text build-ambiguous-words (top {top} English words).\n"
              "# word\tzipf_en\tzipf_vi\n")
    atomic.write_text(out, header + "\n".join(sorted(rows)) + "\n")
    return len(rows)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["build-ambiguous-words"]:
        print(f"{build_ambiguous_words()} words written to {AMBIGUOUS_WORDS}")
    else:
        raise SystemExit("usage: python -m lib.text build-ambiguous-words")
