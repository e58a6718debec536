"""The bundled demo corpus and its generator."""
import json
import re
import shutil
from collections import Counter

import pytest

from conftest import DEMO
from lib import config, demo_corpus, manifest, split, text

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def demo():
    return manifest.read(DEMO / "manifest.tsv")  # validates every row and opens every audio file


def test_demo_corpus_is_valid_and_as_described(demo):
    summary = demo.summary()
    assert summary["valid_rows"] == 1200 and summary["rejected_rows"] == 0
    assert summary["speakers"] == 30
    assert 0.9 < summary["hours"] < 1.1
    assert summary["with_translation"] == 1152 and summary["lang_tags_derived"] == 0
    lone = [s for s in demo.segments if not s.cells["start"]]
    assert 0 < len(lone) < summary["recordings"] < 1200  # single- and multi-segment recordings both present
    kinds = Counter(("en" in s.lang_tags, "vi" in s.lang_tags) for s in demo.segments)
    assert kinds[(True, True)] > 1000 and kinds[(False, True)] > 50 and kinds[(True, False)] > 20
    assert sum(p.stat().st_size for p in DEMO.rglob("*")) < 15e6


def test_demo_split_holds_several_speakers_per_split(demo, tmp_path):
    result = split.split_and_write(demo, config.SplitParams(0.8, 0.1, 0.1), 1234, tmp_path)
    for name, target in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        stats = result.report["splits"][name]
        assert abs(stats["achieved_ratio"] - target) <= 0.05 and stats["speakers"] >= 3


def test_a_subset_takes_the_first_rows_of_the_first_speakers(demo, tmp_path):
    small = manifest.read(demo_corpus.subset(tmp_path / "small.tsv", 3, speakers=4))
    first = list(dict.fromkeys(s.speaker for s in demo.segments))[:4]
    assert sorted({s.speaker for s in small.segments}) == sorted(first) and len(small.segments) == 12
    for speaker in first:
        assert [s.id for s in small.segments if s.speaker == speaker] == [
            s.id for s in demo.segments if s.speaker == speaker][:3]


def test_tagger_agrees_with_the_constructed_tags(demo):
    pairs = [(gold, guess) for s in demo.segments for gold, guess in zip(s.lang_tags, text.tag_transcript(s.transcript))]
    assert len(pairs) > 10_000
    assert sum(g == t for g, t in pairs) / len(pairs) >= 0.99


def test_templates_are_well_formed():
    templates, fillers = demo_corpus.load_templates()
    assert len(templates) >= 80 and len({t["domain"] for t in templates}) >= 10
    assert len(demo_corpus.english_inserts()) >= 400
    assert any(t.get("lang") == "en" for t in templates)
    assert any(all(s.startswith("vi_") for s in re.findall(r"\{(\w+)\}", t["vi"])) and "[" not in t["vi"]
               for t in templates)
    for t in templates:
        slots = set(re.findall(r"\{(\w+)\}", t["vi"]))
        assert slots == set(re.findall(r"\{(\w+)\}", t["en"])), t
        assert slots <= set(fillers), t
        if t.get("lang") != "en":  # English written into a template must be marked [..] so an English voice says it
            bare = re.sub(r"\{\w+\}|\[[^\]]+\]", " ", t["vi"])
            words = [re.sub(r"[^\w]", "", w) for w in bare.split()]
            assert all(text.is_vietnamese_syllable(w) for w in words if w), t["vi"]


def test_sentences_translations_and_tags_line_up():
    maker = demo_corpus.SentenceMaker(seed=1)
    for _ in range(300):
        sentence = maker.make()
        assert len(sentence.lang_tags) == len(sentence.transcript.split())
        assert not re.search(r"[{}\[\]|]", sentence.transcript + sentence.translation)
        assert sentence.transcript[0].isupper() and sentence.translation[0].isupper()
        assert sentence.translation[-1] in ".?!"
        assert " ".join(text for _, text in sentence.runs()) == sentence.transcript


@needs_espeak
def test_generator_writes_a_valid_reproducible_corpus(tmp_path):
    first = demo_corpus.generate(tmp_path / "a", utterances=8, seed=3, speakers=3)
    again = demo_corpus.generate(tmp_path / "b", utterances=8, seed=3, speakers=3)
    assert first.read_bytes() == again.read_bytes()
    m = manifest.read(first)
    assert len(m.segments) == 8 and len({s.speaker for s in m.segments}) == 3
    assert all(s.lang_tags and s.duration > 0.5 for s in m.segments)
    counts = demo_corpus.check_phonemes(tmp_path / "a")
    assert counts["en_stretches"] > 0 and counts["vi_stretches"] > 0
    assert counts["en_spoken_english"] == counts["en_stretches"] == counts["en_distinct_from_vietnamese"]
    assert counts["vi_spoken_vietnamese"] == counts["vi_stretches"]


@needs_espeak
def test_each_stretch_keeps_the_speakers_voice():
    voice = demo_corpus.Voice("s", "vi-vn-x-south", "en-us", "f2", 50, 160)
    sentence = demo_corpus.Sentence("Em gửi report trước tuần này", ("vi", "vi", "en", "vi", "vi", "vi"))
    spoken = demo_corpus.phonemes(sentence.ssml(voice), voice.espeak_args())
    after = demo_corpus.phonemes("trước tuần này", ["-v", "vi-vn-x-south"])
    northern = demo_corpus.phonemes("trước tuần này", ["-v", "vi"])
    assert after != northern and spoken.endswith(after)  # the Southern voice, also after the English word


def test_the_retention_sets_are_plain_speech_by_voices_no_other_demo_set_has():
    used = {(v["vi_voice"], v["variant"]) for folder in ("demo", "demo-heldout")
            for v in json.loads((DEMO.parent / folder / "generation.json").read_text())["voices"]}
    for language in ("vi", "en"):
        folder = DEMO.parent / f"demo-retention-{language}"
        voices = json.loads((folder / "generation.json").read_text())["voices"]
        assert {v["variant"] for v in voices} <= set(demo_corpus.PLAIN_VARIANTS[language])
        assert not {v["variant"] for v in voices} & {variant for _, variant in used}
        found = manifest.read(folder / "manifest.tsv")
        assert len(found.segments) == 20 and not found.rejected
        assert all(set(s.lang_tags) <= {language, "x"} for s in found.segments)
        assert all(bool(s.translation) == (language == "vi") for s in found.segments)
    sentences = demo_corpus.plain_sentences("en", 3, seed=1)
    assert all(s.translation == "" and set(s.lang_tags) == {"en"} for s in sentences)


def test_the_voice_shift_set_has_voices_and_channels_unlike_every_training_voice():

    folder = DEMO.parent / "demo-voiceshift"
    voices = json.loads((folder / "generation.json").read_text())["voices"]
    corpus = json.loads((DEMO / "generation.json").read_text())["voices"]
    other = {v["variant"] for v in corpus} | {v for vs in demo_corpus.PLAIN_VARIANTS.values() for v in vs}
    assert len(voices) >= 8 and not {v["variant"] for v in voices} & other
    low, high = min(v["pitch"] for v in corpus), max(v["pitch"] for v in corpus)
    slow, fast = min(v["speed"] for v in corpus), max(v["speed"] for v in corpus)
    assert all(v["pitch"] < low - 10 or v["pitch"] > high + 10 for v in voices)  # far from every training pitch
    assert all(v["speed"] < slow - 15 or v["speed"] > fast + 15 for v in voices)
    assert Counter(v["channel"] for v in voices) == {c: len(voices) // 4 for c in demo_corpus.CHANNELS}
    found = manifest.read(folder / "manifest.tsv")  # every row valid, every file decoded
    assert len(found.segments) >= 48 and not found.rejected
    suffixes = {v["speaker"]: {s.audio.suffix for s in found.segments if s.speaker == v["speaker"]} for v in voices}
    assert all(suffixes[v["speaker"]] == {demo_corpus.CHANNEL_SUFFIX.get(v["channel"], ".ogg")} for v in voices)


def test_the_channels_reverberate_narrow_the_band_and_compress(tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    click = np.zeros(16_000, np.float32)
    click[800] = 0.5
    wet = demo_corpus.reverberant(click, rng)
    assert len(wet) == len(click) and np.abs(wet[800 + 4000:]).max() > 0.01  # a tail a quarter second on
    noise = (0.1 * rng.standard_normal(32_000)).astype(np.float32)
    phone, rate = sf.read(io.BytesIO(demo_corpus.encode_channel("telephone", noise, rng)))
    assert rate == 8000 and sf.info(io.BytesIO(demo_corpus.encode_channel("telephone", noise, rng))).subtype == "ULAW"
    spectrum, frequencies = np.abs(np.fft.rfft(phone)) ** 2, np.fft.rfftfreq(len(phone), 1 / 8000)
    assert spectrum[frequencies < 200].mean() < 0.01 * spectrum[(frequencies > 500) & (frequencies < 3000)].mean()
    mp3 = demo_corpus.encode_channel("codec", noise, rng)
    assert sf.info(io.BytesIO(mp3)).format == "MP3" and len(mp3) * 8 / 2 < 24_000  # about 18 kbit/s
    with pytest.raises(ValueError, match="channel: expected one of"):
        demo_corpus.encode_channel("radio", noise, rng)


@needs_espeak
def test_the_generator_makes_a_voice_shift_set(tmp_path):
    path = demo_corpus.generate(tmp_path / "shift", utterances=8, seed=5, speakers=4, voiceshift_from=DEMO)
    found = manifest.read(path)
    assert len(found.segments) == 8 and not found.rejected
    assert {s.speaker for s in found.segments} == {f"shift0{i}" for i in range(1, 5)}
    assert {s.audio.suffix for s in found.segments} == {".ogg", ".wav", ".mp3"}
    assert "--voiceshift" in (tmp_path / "shift" / "generation.json").read_text()


def test_a_wide_corpus_has_more_variants_and_rates_and_none_of_another_sets_voices(tmp_path):
    held = json.loads((DEMO.parent / "demo-heldout" / "generation.json").read_text())["voices"]
    path = demo_corpus.generate(tmp_path / "wide", utterances=12, seed=7, speakers=12, wide=True,
                                avoid=DEMO.parent / "demo-heldout")
    voices = json.loads((path.parent / "generation.json").read_text())["voices"]
    assert len(manifest.read(path).segments) == 12 and len(voices) == 12
    others = set(demo_corpus.SHIFT_VARIANTS) | {v for vs in demo_corpus.PLAIN_VARIANTS.values() for v in vs}
    assert {v["variant"] for v in voices} <= set(demo_corpus.VARIANTS + demo_corpus.WIDE_VARIANTS) and \
        not set(demo_corpus.WIDE_VARIANTS) & others
    assert not {(v["vi_voice"], v["variant"]) for v in voices} & {(v["vi_voice"], v["variant"]) for v in held}
    assert all(120 <= v["speed"] <= 200 and 25 <= v["pitch"] <= 75 for v in voices)
    shift_slow, shift_fast = demo_corpus.SHIFT_SPEEDS
    assert shift_slow[1] < demo_corpus.WIDE_SPEEDS[0] and demo_corpus.WIDE_SPEEDS[1] < shift_fast[0]
    assert "--wide --avoid" in (path.parent / "generation.json").read_text()
