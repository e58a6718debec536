"""Synthetic Vietnamese-English code-switched speech: the demo's and the tests' data.

    python -m lib.demo_corpus --out data/demo --utterances 1200 --seed 2026
    python -m lib.demo_corpus --out data/demo-heldout --heldout data/demo --utterances 60 --seed 2027 --speakers 6
    python -m lib.demo_corpus --check data/demo      # the phoneme ("listening") check

Sentences come from hand-written templates (`lib/data/demo_templates.yaml`) whose slots take English (or
Vietnamese) fillers; the translation is built from the same template and fillers, and `lang_tags` follow from which
part of the template each word came from. espeak-ng speaks them: a Vietnamese voice (Northern, Central or Southern)
with each English stretch switched to an English voice by SSML `<voice>`, in the same utterance. Speakers differ by
voice, variant, pitch and rate. Several segments of one speaker share a recording, with `start`/`end` inside it, as
an annotation export would. The manifest depends only on the seed and the espeak-ng version.

`--heldout CORPUS` makes a set held out of a generated corpus: sentences from the held-out templates
(`lib/data/demo_heldout_templates.yaml`, sentence frames the corpus never uses, filled from the same fillers), spoken
by voices (Vietnamese voice and variant) none of the corpus' speakers has.

`--voiceshift CORPUS` makes a voice-shift set: held-out sentences (as `--heldout`) spoken by voices made unlike every
voice of the corpus and its other sets: espeak-ng variants none of them uses (SHIFT_VARIANTS), pitch far below or
above the corpus' 25-75, flat or wide intonation (SSML prosody range), slow or fast speech, each voice heard through a
channel (CHANNELS): as it is, in a reverberant room, over a telephone line (300-3400 Hz, 8 kHz mu-law, the file an
8 kHz mu-law WAV) or through a lossy codec (an MP3 at a low bit rate). The channels are made here with their own code
(an exponentially decaying noise tail for the room, a spectral mask for the band), not with training's augmentation
(lib.augment), so that a gain on this set is not the memory of one simulator:

    python -m lib.demo_corpus --out data/demo-voiceshift --voiceshift data/demo --utterances 64 --seed 2030 \
        --speakers 8

`--plain vi|en` makes a retention set: plain Vietnamese (with translations) or plain English sentences
(`lib/data/demo_plain_sentences.yaml`, no code-switching), spoken in that language only by espeak-ng variants
(PLAIN_VARIANTS) that neither the corpus nor its held-out set uses:

    python -m lib.demo_corpus --out data/demo-retention-vi --plain vi --utterances 20 --seed 2028 --speakers 4
    python -m lib.demo_corpus --out data/demo-retention-en --plain en --utterances 20 --seed 2029 --speakers 4
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import soxr
import yaml

from lib import atomic, manifest as manifest_io

TEMPLATES = Path(__file__).parent / "data" / "demo_templates.yaml"
HELDOUT_TEMPLATES = Path(__file__).parent / "data" / "demo_heldout_templates.yaml"
DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "data" / "demo" / "manifest.tsv"
SAMPLE_RATE = 16_000
VI_VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")
EN_VOICES = ("en-us", "en")  # American, British ("en-gb" is no voice name in SSML)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
PLAIN_SENTENCES = Path(__file__).parent / "data" / "demo_plain_sentences.yaml"
PLAIN_VARIANTS = {"vi": ("Andy", "Annie", "Michael", "linda"), "en": ("Gene", "Lee", "max", "m8")}  # the retention
# sets' speakers: variants the 36 voice/variant pairs of the corpus and its held-out set do not use
WIDE_VARIANTS = ("adam", "Alex", "belinda", "benjamin", "caleb", "david", "Denis", "Diogo", "edward", "gustave",
                 "Hugo", "marcelo", "michel", "Mike", "quincy", "rob", "sandro", "victor", "zac")  # --wide: more
# variants, none another demo set uses, none robotic, none that changes espeak-ng's intonation or syllable lengths
PITCHES = (25, 75)  # espeak-ng's -p of the corpus' speakers
SPEEDS = (135, 180)  # their words a minute
WIDE_SPEEDS = (120, 200)  # --wide: slower and faster speakers, still outside the voice-shift set's slow and fast
SHIFT_VARIANTS = ("Alicia", "aunty", "grandma", "shelby", "steph", "boris", "grandpa", "iven3", "norbert", "travis")
# the voice-shift set's speakers: variants no other demo set uses, none robotic
SHIFT_PITCHES = ((0, 12), (88, 99))  # espeak-ng's -p, far below and far above the corpus' 25-75
SHIFT_SPEEDS = ((90, 115), (205, 250))  # words a minute, slow and fast, outside the corpus' 135-180
SHIFT_RANGES = ("x-low", "x-high")  # SSML prosody range: flat or wide intonation (the corpus: espeak's default)
CHANNELS = ("clean", "room", "telephone", "codec")  # how a voice-shift speaker is heard
COLUMNS = ("id", "audio_path", "start", "end", "duration", "transcript", "translation", "speaker", "lang_tags",
           "domain")
VORBIS_COMPRESSION = 0.9  # libsndfile's scale: 0 best quality, 1 smallest file
UNTRANSLATED_SHARE = 0.04  # rows left without a translation: they train and test ASR only
_PIECE = re.compile(r"\{(\w+)\}|\[([^\]]+)\]")


@dataclass(frozen=True)
class Voice:
    speaker: str
    vi_voice: str
    en_voice: str
    variant: str
    pitch: int
    speed: int
    pitch_range: str = ""  # SSML prosody range ("": espeak's default)
    channel: str = "clean"  # one of CHANNELS: what the recordings go through

    def espeak_args(self) -> list[str]:
        return ["-v", f"{self.vi_voice}+{self.variant}", "-p", str(self.pitch), "-s", str(self.speed)]

    def spoken(self, text: str) -> str:
        """`text` (escaped) inside the voice's prosody, where it has one."""
        return f'<prosody range="{self.pitch_range}">{escape(text)}</prosody>' if self.pitch_range else escape(text)


@dataclass(frozen=True)
class Sentence:
    transcript: str
    lang_tags: tuple[str, ...]
    translation: str = ""
    domain: str = ""

    def runs(self) -> list[tuple[str, str]]:
        """Stretches of words spoken by one voice, in order: ("vi", "Chiều nay em gửi"), ("en", "report"), ...
        Words tagged `x` (numbers) are spoken by the Vietnamese voice."""
        runs: list[tuple[str, str]] = []
        for word, tag in zip(self.transcript.split(), self.lang_tags):
            lang = "en" if tag == "en" else "vi"
            if runs and runs[-1][0] == lang:
                runs[-1] = (lang, f"{runs[-1][1]} {word}")
            else:
                runs.append((lang, word))
        return runs

    def ssml(self, voice: Voice) -> str:
        """Every run in an explicit <voice>: after a </voice>, espeak-ng would fall back to its default Northern
        `vi` voice rather than the speaker's."""
        names = {"vi": f"{voice.vi_voice}+{voice.variant}", "en": f"{voice.en_voice}+{voice.variant}"}
        parts = [f'<voice name="{names[lang]}">{voice.spoken(text)}</voice>' for lang, text in self.runs()]
        return "<speak>" + " ".join(parts) + "</speak>"


@lru_cache(maxsize=2)
def load_templates(path: Path = TEMPLATES) -> tuple[list[dict], dict[str, list[str]]]:
    """The templates of `path` and the fillers (always those of the corpus' own file)."""
    fillers = yaml.safe_load(TEMPLATES.read_text(encoding="utf-8"))["fillers"]
    templates = yaml.safe_load(path.read_text(encoding="utf-8"))["templates"]
    return templates, {slot: [str(f) for f in values] for slot, values in fillers.items()}


def english_inserts() -> set[str]:
    """Every English word or phrase a template can put into a Vietnamese sentence (spoken forms)."""
    templates, fillers = load_templates()
    inserts = {f.split("|")[0] for slot, values in fillers.items() if not slot.startswith("vi_") and slot != "num"
               for f in values}
    inserts |= {m.group(2) for t in templates if t.get("lang") != "en" for m in _PIECE.finditer(t["vi"]) if m.group(2)}
    return inserts


def make_voices(count: int, seed: int, taken: frozenset[tuple[str, str]] = frozenset(),
                prefix: str = "spk", variants: tuple[str, ...] = VARIANTS, speeds: tuple[int, int] = SPEEDS
                ) -> list[Voice]:
    """`count` distinct speakers: voice, variant, pitch and rate drawn from the seed; no (voice, variant) of `taken`."""
    rng = random.Random(f"voices-{seed}")
    combos = [c for c in itertools.product(VI_VOICES, variants) if c not in taken]
    rng.shuffle(combos)
    if taken and count > len(combos):
        raise ValueError(f"only {len(combos)} voices are left that the corpus does not use; ask for fewer speakers")
    voices = []
    for number, (vi_voice, variant) in enumerate(itertools.islice(itertools.cycle(combos), count)):
        voices.append(Voice(f"{prefix}{number + 1:02d}", vi_voice, EN_VOICES[rng.random() < 0.3], variant,
                            pitch=rng.randint(*PITCHES), speed=rng.randint(*speeds)))
    return voices


def make_shift_voices(count: int, seed: int, taken: frozenset[str]) -> list[Voice]:
    """`count` voice-shift speakers: SHIFT_VARIANTS not in `taken` (variants other demo sets use), each with a
    Vietnamese voice, a pitch low or high (SHIFT_PITCHES), a rate slow or fast (SHIFT_SPEEDS), a flat or wide
    intonation (SHIFT_RANGES), and the CHANNELS in turn."""
    rng = random.Random(f"voiceshift-{seed}")
    variants = [v for v in SHIFT_VARIANTS if v not in taken]
    if count > len(variants):
        raise ValueError(f"only {len(variants)} voice-shift variants are left that no other demo set uses; ask for "
                         "fewer speakers")
    rng.shuffle(variants)
    voices = []
    for number, variant in enumerate(variants[:count]):
        low_pitch, slow, flat = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
        voices.append(Voice(f"shift{number + 1:02d}", VI_VOICES[number % len(VI_VOICES)], rng.choice(EN_VOICES),
                            variant, pitch=rng.randint(*SHIFT_PITCHES[0 if low_pitch else 1]),
                            speed=rng.randint(*SHIFT_SPEEDS[0 if slow else 1]),
                            pitch_range=SHIFT_RANGES[0 if flat else 1], channel=CHANNELS[number % len(CHANNELS)]))
    return voices


class SentenceMaker:
    """Fills templates; templates and each slot's fillers are used in turn from seeded shuffles, so all get used."""

    def __init__(self, seed: int, templates_file: Path = TEMPLATES):
        templates, fillers = load_templates(templates_file)
        self.rng = random.Random(f"sentences-{seed}")
        self.templates = self._cycle(templates)
        self.fillers = {slot: self._cycle(values) for slot, values in fillers.items()}

    def _cycle(self, items: list):
        items = list(items)
        while True:
            self.rng.shuffle(items)
            yield from items

    def make(self) -> Sentence:
        template = next(self.templates)
        base_lang = template.get("lang", "vi")
        chosen: dict[str, tuple[str, str]] = {}
        spans: list[tuple[str, str]] = []  # (text, language of its letters)
        position = 0
        for match in _PIECE.finditer(template["vi"]):
            spans.append((template["vi"][position:match.start()], base_lang))
            slot, literal = match.groups()
            if literal:
                spans.append((literal, "en"))
            else:
                spoken, _, translated = next(self.fillers[slot]).partition("|")
                chosen[slot] = (spoken, translated or spoken)
                spans.append((spoken, "vi" if slot.startswith("vi_") or slot == "num" else "en"))
            position = match.end()
        spans.append((template["vi"][position:], base_lang))
        transcript = "".join(text for text, _ in spans)
        owner = [lang for text, lang in spans for _ in text]
        tags = []
        for word in re.finditer(r"\S+", transcript):
            letters = [i for i in range(word.start(), word.end()) if transcript[i].isalpha()]
            tags.append(owner[letters[0]] if letters else "x")
        translation = _PIECE.sub(lambda m: chosen[m.group(1)][1], template["en"])
        return Sentence(transcript[:1].upper() + transcript[1:], tuple(tags),
                        translation[:1].upper() + translation[1:], template["domain"])


def plain_sentences(language: str, count: int, seed: int) -> list[Sentence]:
    """`count` sentences of PLAIN_SENTENCES in `language`, from a seeded shuffle (in turn when more are asked for):
    every word tagged with the language (digits `x`), Vietnamese ones with their translation."""
    entries = yaml.safe_load(PLAIN_SENTENCES.read_text(encoding="utf-8"))[language]
    random.Random(f"plain-{seed}").shuffle(entries)
    sentences = []
    for k in range(count):
        entry = entries[k % len(entries)]
        transcript, translation = (entry["vi"], entry["en"]) if language == "vi" else (entry, "")
        tags = tuple(language if any(c.isalpha() for c in word) else "x" for word in transcript.split())
        sentences.append(Sentence(transcript, tags, translation, "plain"))
    return sentences


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def synthesize(sentence: Sentence, voice: Voice) -> np.ndarray:
    """Speak the sentence, trim the silence around it, and return 16 kHz mono float32."""
    wav = subprocess.run(["espeak-ng", "-m", *voice.espeak_args(), "--stdout", sentence.ssml(voice)],
                         capture_output=True, check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
    margin = int(0.05 * rate)
    samples = samples[max(loud[0] - margin, 0):loud[-1] + margin]
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def generate(out: str | Path, utterances: int, seed: int, speakers: int = 30, heldout_from: Path | None = None,
             plain: str | None = None, voiceshift_from: Path | None = None, wide: bool = False,
             avoid: Path | None = None) -> Path:
    """Write `out/manifest.tsv`, `out/audio/<speaker>/*` and `out/generation.json`; return the manifest path.
    With `heldout_from` (a generated corpus), the held-out templates and voices that corpus does not use; with
    `voiceshift_from`, the held-out templates and voice-shift voices (`make_shift_voices`, each through its channel);
    with `plain` ("vi" or "en"), plain sentences in that language spoken by PLAIN_VARIANTS. A corpus's speakers come
    from VARIANTS at SPEEDS, or with `wide` from VARIANTS and WIDE_VARIANTS at WIDE_SPEEDS; none has a (voice,
    variant) of the set at `avoid`."""
    out = Path(out)
    rng = random.Random(f"corpus-{seed}")
    held_out = heldout_from or voiceshift_from
    templates_file = PLAIN_SENTENCES if plain else HELDOUT_TEMPLATES if held_out else TEMPLATES
    if plain:
        voices = make_voices(speakers, seed, prefix=f"plain{plain}", variants=PLAIN_VARIANTS[plain])
        sentences = plain_sentences(plain, utterances, seed)
    else:
        if voiceshift_from:
            voices = make_shift_voices(speakers, seed, frozenset(variant for _, variant in voice_pairs(held_out)))
        elif heldout_from:
            voices = make_voices(speakers, seed, voice_pairs(held_out), prefix="held")
        else:
            voices = make_voices(speakers, seed, voice_pairs(avoid) if avoid else frozenset(),
                                 variants=VARIANTS + WIDE_VARIANTS if wide else VARIANTS,
                                 speeds=WIDE_SPEEDS if wide else SPEEDS)
        maker = SentenceMaker(seed, templates_file)
        sentences = [maker.make() for _ in range(utterances)]
    owners = [voices[i % speakers] for i in range(utterances)]
    rng.shuffle(owners)
    with ThreadPoolExecutor(max_workers=4) as pool:
        audio = list(pool.map(synthesize, sentences, owners))

    rows = []
    for voice in voices:
        mine = [i for i, owner in enumerate(owners) if owner is voice]
        recording = 0
        while mine:
            size = rng.choice((1, 2, 3, 4, 5, 6))
            take, mine = mine[:size], mine[size:]
            recording += 1
            rows += _write_recording(out, voice, recording, [(sentences[i], audio[i]) for i in take], rng)
    rows.sort(key=lambda r: r["id"])
    for row in rows:
        if rng.random() < UNTRANSLATED_SHARE and not plain:
            row["translation"] = ""
    path = atomic.write_tsv(out / "manifest.tsv", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    atomic.write_json(out / "generation.json", {
        "command": f"python -m lib.demo_corpus --out {out.as_posix()}"
                   + (f" --heldout {Path(heldout_from).as_posix()}" if heldout_from else "")
                   + (f" --voiceshift {Path(voiceshift_from).as_posix()}" if voiceshift_from else "")
                   + (f" --plain {plain}" if plain else "") + (" --wide" if wide else "")
                   + (f" --avoid {Path(avoid).as_posix()}" if avoid else "")
                   + f" --utterances {utterances} --seed {seed}" + (f" --speakers {speakers}" if speakers != 30 else ""),
        "seed": seed, "utterances": utterances, "speakers": speakers, "wide": wide, "espeak_ng": espeak_version(),
        "templates_file": templates_file.name,
        "templates": None if plain else len(load_templates(templates_file)[0]), "plain": plain,
        "voices": [vars(v) for v in voices],
    })
    return path


def voice_pairs(folder: Path) -> frozenset[tuple[str, str]]:
    """The (Vietnamese voice, variant) of each speaker of a generated set."""
    voices = json.loads((Path(folder) / "generation.json").read_text(encoding="utf-8"))["voices"]
    return frozenset((v["vi_voice"], v["variant"]) for v in voices)


def _write_recording(out: Path, voice: Voice, number: int, segments: list[tuple[Sentence, np.ndarray]],
                     rng: random.Random) -> list[dict]:
    """One file holding the segments with pauses between, heard through the voice's channel (`encode_channel`: Ogg
    Vorbis unless the channel is a file format); rows with start/end (none for a lone one)."""
    name = f"{voice.speaker}_r{number:03d}"
    pieces, rows, cursor = [], [], 0
    lead = np.zeros(int(0.25 * SAMPLE_RATE), np.float32)
    pieces.append(lead)
    cursor += len(lead)
    suffix = CHANNEL_SUFFIX.get(voice.channel, ".ogg")
    rel = f"audio/{voice.speaker}/{name}{suffix}"
    for k, (sentence, samples) in enumerate(segments):
        if k:
            gap = np.zeros(int(rng.uniform(0.3, 0.8) * SAMPLE_RATE), np.float32)
            pieces.append(gap)
            cursor += len(gap)
        start, end = cursor / SAMPLE_RATE, (cursor + len(samples)) / SAMPLE_RATE
        pieces.append(samples)
        cursor += len(samples)
        lone = len(segments) == 1
        rows.append({"id": f"{name}_{k:02d}", "audio_path": rel, "start": "" if lone else f"{start:.3f}",
                     "end": "" if lone else f"{end:.3f}",
                     "duration": f"{(cursor / SAMPLE_RATE + 0.25 if lone else end - start):.3f}",
                     "transcript": sentence.transcript, "translation": sentence.translation,
                     "speaker": voice.speaker, "lang_tags": " ".join(sentence.lang_tags),
                     "domain": sentence.domain})
    pieces.append(lead)
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    channel_rng = np.random.default_rng(random.Random(f"channel-{name}").getrandbits(64))
    atomic.write_bytes(out / rel, encode_channel(voice.channel, np.concatenate(pieces), channel_rng))
    return rows


CHANNEL_SUFFIX = {"telephone": ".wav", "codec": ".mp3"}  # channels that are a file format; the others: Ogg Vorbis
ROOM_RT60 = (0.5, 1.0)  # seconds for the room's reverberation to fall by 60 dB
TELEPHONE_BAND = (300.0, 3400.0)  # Hz, the voice band of a telephone line
MP3_COMPRESSION = 0.99  # libsndfile's scale for MP3 (1 is refused): about 18 kbit/s at 16 kHz


def encode_channel(channel: str, wave: np.ndarray, rng: np.random.Generator) -> bytes:
    """A recording's file as heard through `channel` (CHANNELS): clean and room as Ogg Vorbis (`encode_vorbis`), the
    telephone line as an 8 kHz mu-law WAV of its band, the codec as a low-bit-rate MP3."""
    if channel == "clean":
        return encode_vorbis(wave)
    if channel == "room":
        return encode_vorbis(reverberant(wave, rng))
    buffer = io.BytesIO()
    if channel == "telephone":
        sf.write(buffer, telephone_band(wave), 8000, format="WAV", subtype="ULAW")
    elif channel == "codec":
        with sf.SoundFile(buffer, "w", SAMPLE_RATE, 1, format="MP3", subtype="MPEG_LAYER_III",
                          compression_level=MP3_COMPRESSION) as f:
            f.write(wave)
    else:
        raise ValueError(f"channel: expected one of {', '.join(CHANNELS)}, got {channel!r}")
    return buffer.getvalue()


def reverberant(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`wave` in a room: convolved with an impulse response of a direct sound, a few early reflections and a tail of
    noise decaying by 60 dB over an RT60 drawn from ROOM_RT60; as long as `wave`, at its peak level."""
    rt60 = rng.uniform(*ROOM_RT60)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(len(t)) * np.exp(-np.log(1000) * t / rt60) * 0.3
    response[0] = 1.0
    for delay in rng.uniform(0.004, 0.04, size=6):
        response[int(delay * SAMPLE_RATE)] += rng.uniform(0.3, 0.7) * rng.choice([-1, 1])
    size = len(wave) + len(response)
    wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(response, size), size)[:len(wave)]
    return (wet * np.abs(wave).max() / max(np.abs(wet).max(), 1e-9)).astype(np.float32)


def telephone_band(wave: np.ndarray) -> np.ndarray:
    """`wave` at 8 kHz, only its TELEPHONE_BAND kept (a spectral mask with 50 Hz cosine edges), at its peak level."""
    narrow = soxr.resample(wave, SAMPLE_RATE, 8000)
    frequencies = np.fft.rfftfreq(len(narrow), 1 / 8000)
    low, high = TELEPHONE_BAND
    mask = np.clip(np.minimum((frequencies - low + 50) / 100, (high + 50 - frequencies) / 100), 0, 1)
    band = np.fft.irfft(np.fft.rfft(narrow) * (0.5 - 0.5 * np.cos(np.pi * mask)), len(narrow))
    return (band * np.abs(wave).max() / max(np.abs(band).max(), 1e-9)).astype(np.float32)


def encode_vorbis(samples: np.ndarray) -> bytes:
    """Ogg Vorbis at about 27 kbit/s (16 kHz mono). Written in blocks: one large write crashes libsndfile 1.2.2."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", SAMPLE_RATE, 1, format="OGG", subtype="VORBIS",
                      compression_level=VORBIS_COMPRESSION) as f:
        for first in range(0, len(samples), 8192):
            f.write(samples[first:first + 8192])
    return buffer.getvalue()


def subset(out: str | Path, per_speaker: int, source: Path = DEMO_MANIFEST, speakers: int | None = None) -> Path:
    """The first `per_speaker` rows of every speaker of a generated corpus (of its first `speakers` speakers, when
    given), written as a manifest at `out` with absolute audio paths: the corpus in small, for tests and benchmarks."""
    lines = source.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    taken: dict[str, int] = {}
    rows = [lines[0]]
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t")))
        if speakers is not None and cells["speaker"] not in taken and len(taken) == speakers:
            continue
        if taken.get(cells["speaker"], 0) < per_speaker:
            taken[cells["speaker"]] = taken.get(cells["speaker"], 0) + 1
            cells["audio_path"] = str(source.parent / cells["audio_path"])
            rows.append("\t".join(cells[c] for c in header))
    return atomic.write_text(out, "\n".join(rows) + "\n")


def phonemes(text_or_ssml: str, args: list[str]) -> str:
    """espeak-ng's phoneme mnemonics for the text, pauses and spacing removed (for comparing languages)."""
    out = subprocess.run(["espeak-ng", "-m", "-q", "-x", *args, text_or_ssml], capture_output=True, text=True,
                         check=True).stdout
    return re.sub(r"\s+|_[|:!]?", "", out)


def check_phonemes(folder: str | Path, limit: int | None = None) -> dict:
    """The listening check: is each English stretch spoken with English phonemes, each Vietnamese one with Vietnamese?

    For every segment, the phonemes espeak-ng produces for the whole SSML utterance are compared with those of each
    stretch spoken alone by the English voice and by the Vietnamese voice. A stretch counts as English (Vietnamese)
    when its English-voice (Vietnamese-voice) phonemes appear in the utterance's.
    """
    folder = Path(folder)
    generation = json.loads((folder / "generation.json").read_text(encoding="utf-8"))
    voices = {v["speaker"]: Voice(**v) for v in generation["voices"]}
    rows = manifest_io.read(folder / "manifest.tsv", check_audio=False).segments[:limit]
    counts = {"en_stretches": 0, "en_spoken_english": 0, "en_distinct_from_vietnamese": 0,
              "vi_stretches": 0, "vi_spoken_vietnamese": 0, "segments": len(rows)}
    for row in rows:
        voice = voices[row.speaker]
        sentence = Sentence(row.transcript, tuple(row.lang_tags))
        spoken = phonemes(sentence.ssml(voice), voice.espeak_args())
        for lang, text in sentence.runs():
            if not any(c.isalpha() for c in text):
                continue
            as_en = phonemes(text, ["-v", voice.en_voice])
            as_vi = phonemes(text, ["-v", voice.vi_voice])
            if lang == "en":
                counts["en_stretches"] += 1
                counts["en_spoken_english"] += as_en in spoken
                counts["en_distinct_from_vietnamese"] += as_en != as_vi
            else:
                counts["vi_stretches"] += 1
                counts["vi_spoken_vietnamese"] += as_vi in spoken
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.demo_corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder to write manifest.tsv and audio/ into")
    parser.add_argument("--utterances", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--speakers", type=int, default=30)
    parser.add_argument("--heldout", metavar="CORPUS", type=Path,
                        help="a set held out of this generated corpus: held-out templates, voices it does not use")
    parser.add_argument("--voiceshift", metavar="CORPUS", type=Path,
                        help="a voice-shift set of this corpus: held-out templates, voices and channels unlike its own")
    parser.add_argument("--plain", choices=("vi", "en"),
                        help="a retention set: plain sentences in this language, spoken by voices the corpus lacks")
    parser.add_argument("--wide", action="store_true",
                        help="more voices: WIDE_VARIANTS besides VARIANTS, rates WIDE_SPEEDS (the bundled corpus: off)")
    parser.add_argument("--avoid", metavar="SET", type=Path, help="a generated set whose voices the corpus leaves out")
    parser.add_argument("--check", metavar="DIR", help="run the phoneme check on a generated corpus instead")
    parser.add_argument("--limit", type=int, help="with --check: only the first N segments")
    args = parser.parse_args(argv)
    if args.check:
        counts = check_phonemes(args.check, args.limit)
        print(json.dumps(counts, indent=2))
        ok = counts["en_spoken_english"] == counts["en_stretches"] and \
            counts["vi_spoken_vietnamese"] == counts["vi_stretches"]
        return 0 if ok else 1
    if not args.out:
        parser.error("--out is required")
    path = generate(args.out, args.utterances, args.seed, args.speakers, args.heldout, args.plain, args.voiceshift,
                    args.wide, args.avoid)
    summary = manifest_io.read(path).summary()
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
