"""Voice activity detection: where a recording has speech, by Silero VAD (the `silero-vad` package ships its model,
so it runs offline). Long-form decoding (lib.longform) cuts recordings at the spans it finds.

The settings are faster-whisper's: speech above a probability of 0.5, a pause of 2 s or more ends a span, 0.4 s of
audio kept either side, stretches shorter than 0.25 s dropped; a span longer than the decoder's window is cut at its
quietest point.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from lib.audio import SAMPLE_RATE

THRESHOLD = 0.5  # speech probability above which a 32 ms frame is speech
MIN_SILENCE = 2.0  # s: a pause this long ends a span
SPEECH_PAD = 0.4  # s of audio kept either side of a span
MIN_SPEECH = 0.25  # s: shorter stretches are dropped


@functools.cache
def silero():
    """The `silero_vad` module and its model (TorchScript), loaded once."""
    import torch

    threads = torch.get_num_threads()
    import silero_vad  # its import sets torch to one thread for the whole process: set back

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its loader uses APIs its dependencies deprecate
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad, silero_vad.load_silero_vad()


def speech_spans(wave: np.ndarray, longest: float) -> list[tuple[float, float]]:
    """(start, end) in seconds of each span of speech in a 16 kHz `wave`, none longer than `longest` seconds."""
    import torch

    package, model = silero()
    with torch.inference_mode():
        found = package.get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), model,
                                      threshold=THRESHOLD, sampling_rate=SAMPLE_RATE,
                                      min_speech_duration_ms=int(MIN_SPEECH * 1000),
                                      max_speech_duration_s=longest - 2 * SPEECH_PAD,
                                      min_silence_duration_ms=int(MIN_SILENCE * 1000),
                                      speech_pad_ms=int(SPEECH_PAD * 1000))
    return [(span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE) for span in found]
