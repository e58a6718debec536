"""Decoding, one way for every model and every path: the options, what one input gives, the runtimes' interface and
the driver.

A runtime's `Decoder` (transformers' and ctranslate2's Whisper in lib.families.whisper, any transformers
encoder-decoder in `Seq2SeqDecoder`) makes its input from audio, encodes a batch, and generates one task at one
temperature. The driver owns everything the paths share, for 05's segments, long-form, the CTranslate2 exports and
`lib.transcribe` alike:

- `decode`: inputs longest first (similar lengths share a batch, fewer finished rows wait on a long one, an
  out-of-memory shows at once), in batches, one encoder pass for every task; Whisper's temperature fallback
  (`fallback`) on the outputs that need it, and the no-speech gate (`Output.silenced`); outputs back in input order.
- `decode_long`: recordings of any length, window by window: with timestamps, Whisper's sequential decoding (each
  window starts where the last complete stretch of the window before ends), else consecutive windows.

The gate is openai/whisper's rule, and the fallback its loop guard: an output is decoded again by sampling at each
temperature in turn while its text compresses too well (a loop), unless it is silence (its no-speech probability
above `no_speech_threshold` and its log-probability below `logprob_threshold`); where every attempt loops, the most
confident is kept (faster-whisper's choice); the gate then empties silence. openai/whisper also decodes unsure
outputs again (average log-probability below `logprob_threshold`) and keeps the last attempt: on the demo's held-out
segments, recordings and non-speech set that took 1.84 times as long for no better score (bench.fallback,
docs/performance.md), so it is an option (`retry_unsure`, `keep_best`), not the default.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import difflib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from lib import atomic
from lib.audio import SAMPLE_RATE
from lib.tasks import SOURCE_LANGUAGE, TASKS

LANGUAGES = ("vi", "en")  # of the speech, forced for the transcript
LONG_FORM_TOKENS = 12  # label tokens a second a stretch of speech is given room for (text up to 10 a second,
# timestamps and the prompt: at 8, ctranslate2 cut the last sentence of the demo's dense recordings)
SETTINGS = ("num_beams", "batch_size", "max_length", "no_speech_threshold", "logprob_threshold",
            "compression_ratio_threshold", "fallback_temperatures")  # what the params' `evaluation` section, a model
# folder's decoding.json and `lib.transcribe` name (`DecodingOptions.from_settings`)
OTHER_NAMES = {"beam_size": "num_beams", "log_prob_threshold": "logprob_threshold", "max_new_tokens": "max_length",
               "temperature": "fallback_temperatures", "temperatures": "fallback_temperatures"}  # openai/whisper's
# and faster-whisper's names of SETTINGS, named in the error a setting by one of them gets


class DecodingError(ValueError):
    """Decoding options that cannot be used, each problem named."""


@dataclass(frozen=True, kw_only=True)
class DecodingOptions:
    """How to decode one task: beam width, tokens generated at most (prompt included), inputs per batch, and
    Whisper's two guards (see the module): the no-speech gate (`no_speech_threshold`, `logprob_threshold`; a
    threshold of 1 turns it off) and the temperature fallback (`temperatures`; none: no fallback). By default the
    fallback decodes loops again and, where every attempt fails, keeps the most confident that does not loop;
    `retry_unsure` also decodes unsure outputs again and `keep_best=False` keeps the last, which together are
    openai/whisper's rule (on the demo's held-out set, 1.84 times slower for no gain: docs/performance.md,
    bench.fallback). Keyword-only and checked as made: a problem is a DecodingError naming the setting."""

    task: str
    num_beams: int = 1
    max_length: int = 225
    batch_size: int = 8
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    temperatures: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    retry_unsure: bool = False
    keep_best: bool = True
    language: str = SOURCE_LANGUAGE  # of the speech, forced for the transcript (the translation is English)
    timestamps: bool = False  # the times of what is said inside each input, where the decoder gives them

    def __post_init__(self):
        problems = []
        if self.task not in TASKS:
            problems.append(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        if self.language not in LANGUAGES:
            problems.append(f"language: expected one of {', '.join(LANGUAGES)}, got {self.language!r}")
        problems += [f"{name}: must be a whole number of at least 1, got {getattr(self, name)!r}"
                     for name in ("num_beams", "max_length", "batch_size")
                     if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        if not 0 <= self.no_speech_threshold <= 1:
            problems.append(f"no_speech_threshold: a probability in [0, 1], got {self.no_speech_threshold!r}")
        if self.logprob_threshold > 0:
            problems.append(f"logprob_threshold: an average log-probability, 0 or below, got {self.logprob_threshold!r}")
        if self.compression_ratio_threshold <= 0:
            problems.append(f"compression_ratio_threshold: must be above 0, got {self.compression_ratio_threshold!r}")
        temperatures = list(self.temperatures)
        if any(not 0 < t <= 2 for t in temperatures) or temperatures != sorted(set(temperatures)):
            problems.append(f"temperatures: rising temperatures above 0 and at most 2, got {temperatures}")
        if problems:
            raise DecodingError("decoding options: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, task: str, settings: Mapping, language: str = SOURCE_LANGUAGE) -> "DecodingOptions":
        """The options of a task from settings named as SETTINGS names them (`fallback_temperatures` for
        `temperatures`); an unknown name is a DecodingError naming it (and the setting it may have meant)."""
        unknown = [name for name in settings if name not in SETTINGS]
        if unknown:
            hints = [f"{name} (did you mean {close[0]}?)" if (close := [OTHER_NAMES[name]] if name in OTHER_NAMES
                                                             else difflib.get_close_matches(name, SETTINGS, 1))
                     else name for name in unknown]
            raise DecodingError(f"unknown decoding setting(s): {', '.join(hints)}; expected some of "
                                f"{', '.join(SETTINGS)}")
        values = {("temperatures" if k == "fallback_temperatures" else k): tuple(v) if k == "fallback_temperatures"
                  else v for k, v in settings.items()}
        return cls(task=task, language=language, **values)

    @classmethod
    def for_test(cls, task: str, evaluation, language: str = SOURCE_LANGUAGE) -> "DecodingOptions":
        """A set scored in 05 (speech in `language`), from the params' `evaluation` section."""
        return cls.from_settings(task, {name: getattr(evaluation, name) for name in SETTINGS}, language)

    @classmethod
    def for_validation(cls, task: str, hp) -> "DecodingOptions":
        """Val scoring during training, from a family's params section: greedy, ungated and without fallback, so that
        scoring every checkpoint stays cheap; the kept checkpoint is decoded with the test settings in 05."""
        return cls(task=task, max_length=hp.max_length, batch_size=hp.eval_batch_size, no_speech_threshold=1.0,
                   logprob_threshold=0.0, temperatures=())

    def settings(self) -> dict:
        """The options as SETTINGS names them (what a model folder's decoding.json holds)."""
        values = {name: getattr(self, "temperatures" if name == "fallback_temperatures" else name)
                  for name in SETTINGS}
        return values | {"fallback_temperatures": list(self.temperatures)}


SETTINGS_FILE = "decoding.json"  # the decoding settings a trained folder and its exports carry


def save_settings(folder: Path, options: DecodingOptions) -> Path:
    """The settings of `options` into `folder/decoding.json` (training writes 05's into `final/`): what
    lib.transcribe decodes the folder with unless told otherwise."""
    return atomic.write_text(Path(folder) / SETTINGS_FILE, json.dumps(options.settings(), indent=2) + "\n")


def saved_settings(folder: str | Path) -> dict:
    """The decoding settings saved with a model folder or export (`decoding.json`); none for a folder without them
    or a hub id."""
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def compression_ratio(text: str) -> float:
    """The text's UTF-8 length over its zlib-compressed length, as Whisper measures repetition (a loop compresses
    well: above 2.4 is Whisper's sign of one)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Output:
    """What one input gives for one task: the text as the model wrote it and its tokens; where the decoder gives them,
    the no-speech probability (read at the start of the transcript, before any token) and the average
    log-probability per token; with timestamps asked for, the timed stretches of the text (seconds from the input's
    start; an end of None: the input's end); and whether the fallback decoded it again, with the temperature of the
    attempt kept (above 0: a sampled one)."""

    text: str
    tokens: list[int] = dataclasses.field(default_factory=list)
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    timed: list[tuple[float, float | None, str]] | None = None
    temperature: float = 0.0
    retried: bool = False

    def silenced(self, options: DecodingOptions) -> bool:
        """Whether the no-speech gate empties it: no-speech probability above the threshold and average
        log-probability below its own (never where the decoder gives neither)."""
        return self.no_speech_prob is not None and self.avg_logprob is not None and \
            self.no_speech_prob > options.no_speech_threshold and self.avg_logprob < options.logprob_threshold

    def loops(self, options: DecodingOptions) -> bool:
        return compression_ratio(self.text) > options.compression_ratio_threshold

    def needs_fallback(self, options: DecodingOptions) -> bool:
        """Whether the fallback decodes it again: it loops, or (with `retry_unsure`) its average log-probability is
        below the threshold; never silence, which the gate empties."""
        unsure = options.retry_unsure and self.avg_logprob is not None and \
            self.avg_logprob < options.logprob_threshold
        return (self.loops(options) or unsure) and not self.silenced(options)

    def gated(self, options: DecodingOptions) -> str:
        """The text a deployed model gives: empty where the gate says silence."""
        return "" if self.silenced(options) else self.text


class Decoder(abc.ABC):
    """A runtime that decodes a model: it makes an input from 16 kHz audio, encodes a batch of inputs once, and
    generates one task at one temperature for the rows of an encoded batch. `window`: the seconds of audio one
    input is decoded well in (long-form cuts recordings there); `input_limit`: the longest input it reads at all
    (None: any; `decode` refuses a longer one); `max_tokens`: its decoder's positions."""

    window: float
    input_limit: float | None = None
    max_tokens: int

    @abc.abstractmethod
    def input(self, wave: np.ndarray) -> np.ndarray:
        """The input of 16 kHz audio, as the family caches it (a log-mel, a waveform)."""

    @abc.abstractmethod
    def encode(self, inputs: list[np.ndarray]):
        """A batch's encoder output (whatever `rows` and `generate` read)."""

    @abc.abstractmethod
    def rows(self, encoded, rows: list[int]):
        """The encoder output of the rows `rows` of an encoded batch, in that order."""

    @abc.abstractmethod
    def generate(self, encoded, options: DecodingOptions, temperature: float) -> list[Output]:
        """One output per row of `encoded`: greedy or beam search at 0, sampling (one beam) above."""


def over_limit(decoder: Decoder, seconds: list[float]) -> list[int]:
    """The indices of the inputs of audio `seconds` long that the decoder cannot read whole (`input_limit`)."""
    return [i for i, s in enumerate(seconds) if decoder.input_limit and s > decoder.input_limit + 0.05]


def decode(decoder: Decoder, inputs: list[np.ndarray], seconds: list[float], options: list[DecodingOptions],
           grow: bool = False) -> dict[str, list[Output]]:
    """Task -> one Output per input, in input order, for inputs of audio `seconds` long: longest first in batches of
    the options' batch size, each batch encoded once for every task, each task generated at temperature 0, the outputs
    that need it decoded again (`fallback`). With `grow`, each batch may write LONG_FORM_TOKENS a second of its
    longest input, up to the decoder's positions (long-form stretches, whose text grows with them)."""
    if len({o.batch_size for o in options}) != 1:
        raise DecodingError(f"tasks decoded together share one batch size, got {[o.batch_size for o in options]}")
    too_long = [(i, seconds[i]) for i in over_limit(decoder, seconds)]
    if too_long:
        i, s = too_long[0]
        raise DecodingError(f"input {i} holds {s:.1f} s of audio, over the {decoder.input_limit:g} s the model reads "
                            f"({len(too_long)} such input(s)): decode recordings whole with lib.longform or "
                            "lib.transcribe, which cut them into windows")
    order = [int(i) for i in np.argsort([-s for s in seconds], kind="stable")]
    found: dict[str, list[Output | None]] = {o.task: [None] * len(inputs) for o in options}
    size = options[0].batch_size
    for first in range(0, len(order), size):
        batch = order[first:first + size]
        encoded = decoder.encode([inputs[i] for i in batch])
        for o in options:
            if grow:
                o = dataclasses.replace(o, max_length=min(decoder.max_tokens, max(
                    o.max_length, int(LONG_FORM_TOKENS * seconds[batch[0]]))))
            for i, output in zip(batch, fallback(decoder, encoded, o)):
                found[o.task][i] = output
    return found


def fallback(decoder: Decoder, encoded, options: DecodingOptions) -> list[Output]:
    """The batch generated at temperature 0, and the outputs that need it (`Output.needs_fallback`) generated again
    at each of the options' temperatures in turn until they pass; where every attempt fails, the most confident
    attempt that does not loop (of all, when every one loops), or with `keep_best` off the last. The no-speech
    probability stays the first decode's: it is read before any token is written."""
    outputs = decoder.generate(encoded, options, 0.0)
    pending = [i for i, output in enumerate(outputs) if output.needs_fallback(options)]
    attempts = {i: [outputs[i]] for i in pending}
    for temperature in options.temperatures:
        if not pending:
            break
        again = decoder.generate(decoder.rows(encoded, pending), options, temperature)
        for i, output in zip(pending, again):
            output.temperature, output.no_speech_prob = temperature, outputs[i].no_speech_prob
            attempts[i].append(output)
        pending = [i for i, output in zip(pending, again) if output.needs_fallback(options)]
    for i, tried in attempts.items():
        if i in pending and options.keep_best:
            plain = [a for a in tried if not a.loops(options)] or tried
            kept = max(plain, key=lambda a: a.avg_logprob if a.avg_logprob is not None else 0.0)
        else:
            kept = tried[-1]
        outputs[i] = dataclasses.replace(kept, retried=True)
    return outputs


def decode_long(decoder: Decoder, waves: list[np.ndarray],
                options: list[DecodingOptions]) -> dict[str, list[list[tuple[float, float, Output, str]]]]:
    """Task -> for each recording (16 kHz), its decoded stretches in time order as (start, end, output, text), times
    in the recording: window by window of `decoder.window` seconds, the windows of every recording in one `decode`,
    with timestamps asked for. Where an output gives complete timed stretches and text runs on past the last of them,
    the next window starts at that stretch's end (Whisper's sequential decoding); otherwise at the window's end. An
    output without timestamps, gated, or with times out of order is one stretch for its window (`in_order`)."""
    window = decoder.window
    found: dict[str, list[list]] = {o.task: [[] for _ in waves] for o in options}
    for o in options:  # each task seeks by its own timestamps
        timed = dataclasses.replace(o, timestamps=True)
        length = [len(w) / SAMPLE_RATE for w in waves]
        seek = [0.0] * len(waves)
        while True:
            active = [k for k in range(len(waves)) if length[k] - seek[k] > 0.01]
            if not active:
                break
            spans = [(seek[k], min(seek[k] + window, length[k])) for k in active]
            cut = [waves[k][int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] for k, (a, b) in zip(active, spans)]
            outputs = decode(decoder, [decoder.input(c) for c in cut], [b - a for a, b in spans], [timed],
                             grow=True)[o.task]
            for k, (a, b), output in zip(active, spans, outputs):
                stretches = stretches_of(output, timed, b - a)
                whole = b >= length[k] - 0.01
                if not whole and len(stretches) > 1 and stretches[-1][1] is None:
                    resume = stretches[-2][1]  # the last complete stretch ends there: decode on from it
                    stretches = stretches[:-1]
                else:
                    resume = b - a
                found[o.task][k] += [(round(a + s, 2), round(min(a + (b - a if e is None else e), b), 2), output,
                                      said) for s, e, said in stretches if said]
                seek[k] = a + max(resume, 0.5)  # at least half a second on: never the same window twice
    return found


def stretches_of(output: Output, options: DecodingOptions,
                 seconds: float) -> list[tuple[float, float | None, str]]:
    """The timed stretches of an output of an input of `seconds`, to be trusted (`in_order`), or its text (the gate's:
    empty for silence) as one stretch."""
    text = output.gated(options)
    if text and output.timed and in_order(output.timed, seconds):
        return output.timed
    return [(0.0, None, text)]


TIME_SLACK = 0.5  # s a timestamp may run past its input (Whisper's last one often names the padded frame)


def in_order(stretches: list[tuple[float, float | None, str]], seconds: float) -> bool:
    """Whether timed stretches (start, end or None for the input's end, text) follow each other inside an input of
    `seconds` (TIME_SLACK past its end allowed): a model that has not learned timestamps writes them anywhere."""
    times = [(a, seconds if b is None else b) for a, b, _ in stretches]
    return all(0 <= a < b <= seconds + TIME_SLACK for a, b in times) and \
        all(b <= a for (_, b), (a, _) in zip(times, times[1:]))


class Seq2SeqDecoder(Decoder):
    """Any transformers speech encoder-decoder that a family decodes with `generate()`: its inputs are the family's
    cached inputs (`Family.audio_input`), batched by `Family.model_inputs`, encoded by `Family.encode`, generated with
    `Family.generation_kwargs`. No no-speech probability and no timestamps: never gated; one stretch per window. Its
    window is what its decoder's positions hold at LONG_FORM_TOKENS a second (mBART-50's 1,024: 85 s)."""

    def __init__(self, family, bundle):
        import torch

        self.family, self.bundle = family, bundle
        self.model = bundle.model
        self.device = next(self.model.parameters()).device
        self.max_tokens = family.max_label_tokens(bundle)
        self.window = self.max_tokens / LONG_FORM_TOKENS
        self._torch = torch

    def input(self, wave: np.ndarray) -> np.ndarray:
        return self.family.audio_input(self.bundle, wave)

    def encode(self, inputs: list[np.ndarray]) -> dict:
        batch = self.family.model_inputs(self.bundle, inputs)
        dtype = self.model.dtype
        batch = {k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device) for k, v in batch.items()}
        self.model.eval()
        with self._torch.inference_mode():
            return self.family.encode(self.bundle, batch)

    def rows(self, encoded: dict, rows: list[int]) -> dict:
        return select_rows(encoded, self._torch.tensor(rows, device=self.device))

    def generate(self, encoded: dict, options: DecodingOptions, temperature: float) -> list[Output]:
        kwargs = self.family.generation_kwargs(self.bundle, options) | sampling_arguments(temperature)
        with self._torch.inference_mode(), seeded(self.device, temperature):
            ids = self.model.generate(**unexpanded(encoded), **kwargs)
        return [Output(text.strip(), row) for text, row in
                zip(self.bundle.tokenizer.batch_decode(ids, skip_special_tokens=True), ids.tolist())]


def sampling_arguments(temperature: float) -> dict:
    """`generate()` arguments that sample at `temperature` from the whole distribution (as openai/whisper and
    ctranslate2 do; transformers would keep its top 50 by default), one beam; none at 0."""
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "num_beams": 1} if temperature else {}


@contextlib.contextmanager
def seeded(device, temperature: float):
    """Sampling at `temperature` (a fallback) from a seed of its own, so that a decode gives the same outputs whatever
    ran before it, and the caller's random state is left as it was; nothing to do at 0."""
    if not temperature:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(round(temperature * 1000))
        yield


def unexpanded(encoded: dict) -> dict:
    """`generate()` keyword arguments of an encoder output, each output object a new one: a beam search repeats the
    rows of the one it is given in place (transformers' `_expand_inputs_for_generation`), and the batch's next task
    would read each row repeated, the first rows' audio where its others' should be."""
    from transformers.utils import ModelOutput

    return {key: type(value)(**value) if isinstance(value, ModelOutput) else value for key, value in encoded.items()}


def select_rows(encoded: dict, index) -> dict:
    """`generate()` keyword arguments of an encoder output for the rows `index` gives (repeated, when it repeats
    them)."""
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.utils import ModelOutput

    return {key: BaseModelOutput(last_hidden_state=value[0].index_select(0, index))
            if isinstance(value, ModelOutput) else value.index_select(0, index) for key, value in encoded.items()}
