"""Whisper's token conventions, shared by the Whisper family (lib.families.whisper) and the CTranslate2 conversions
(lib.ct2): the tokenizer's layout, the generation settings that name its special tokens, and what decoding forces.

The layout is the hub checkpoints': a byte-level BPE whose `<|endoftext|>` closes the base vocabulary, then
`<|startoftranscript|>`, the language tokens in Whisper's order, `<|translate|>`, `<|transcribe|>`, `<|startoflm|>`,
`<|startofprev|>`, the no-speech token, `<|notimestamps|>` and the timestamp tokens `<|0.00|>` ... `<|30.00|>`.
"""
from __future__ import annotations

SOURCE_LANGUAGE = "vi"  # forced, never detected: detection fails on code-switched audio (a retention set names its own)
TIME_STEP = 0.02  # s between Whisper's timestamp tokens
MAX_LABEL_TOKENS = 448  # Whisper's decoder positions
WHISPER_LANGUAGES = 99  # whisper tiny ... large-v2; large-v3 adds <|yue|>
WHISPER_SPECIALS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                    "<|notimestamps|>")


def prompt(task: str, language: str = SOURCE_LANGUAGE, timestamps: bool = False) -> list[str]:
    """The tokens decoding forces for a task: `<|startoftranscript|><|vi|><|task|><|notimestamps|>` (`<|en|>` for
    English speech); without `<|notimestamps|>` when timestamps are asked for."""
    return ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>"] + ([] if timestamps else ["<|notimestamps|>"])


def no_speech_token_id(generation_config) -> int:
    """The no-speech token, found as transformers finds it: the token just before `<|notimestamps|>`
    (`<|nocaptions|>` in the original multilingual vocabularies, `<|nospeech|>` in newer ones)."""
    return generation_config.no_timestamps_token_id - 1


def forced(tokenizer, generation_config, task: str, language: str = SOURCE_LANGUAGE,
           timestamps: bool = False) -> tuple[list[int], list[int]]:
    """The forced prompt's ids for a task and language, and the ids decoding suppresses: the model's own suppress
    list, and every timestamp token unless `timestamps` are asked for. Without timestamps asked for, a timestamp in
    the output (as an untrained model emits) would send transformers' Whisper generate into its long-form seek loop."""
    times = range(generation_config.no_timestamps_token_id + 1, len(tokenizer)) if not timestamps else ()
    suppress = sorted(set(generation_config.suppress_tokens or []) | set(times))
    return tokenizer.convert_tokens_to_ids(prompt(task, language, timestamps)), suppress


def timed_pieces(ids: list[int], generation_config, decode) -> list[tuple[float, float | None, str]]:
    """(start, end, text) of each stretch a timestamped output names, times in seconds from the input's start, as
    openai/whisper reads them: text between two timestamps, `<|a|><|a|>` a boundary; text after the last timestamp
    ends with the input (end None). `decode` turns text ids into a string; the prompt's special tokens are skipped
    and `<|endoftext|>` ends the output."""
    begin, eot = generation_config.no_timestamps_token_id + 1, generation_config.eos_token_id
    pieces, text, start, last = [], [], None, 0.0
    for token in ids:
        if token == eot:
            break
        if token >= begin:
            time = round((token - begin) * TIME_STEP, 2)
            if text:
                pieces.append((last if start is None else start, time, decode(text).strip()))
                text, start, last = [], None, time
            else:
                start = time
        elif token < eot:
            text.append(token)
    if text:
        pieces.append((last if start is None else start, None, decode(text).strip()))
    return [p for p in pieces if p[2]]


def whisper_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], specials: list[str],
                      timestamps: int = 1501):
    """A Whisper tokenizer laid out as the hub's: the byte-level BPE (`<|endoftext|>` its last token), the special
    tokens after it in the order given, then the timestamp tokens <|0.00|> ... <|30.00|>."""
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")  # as the hub tokenizers
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * TIME_STEP:.2f}|>" for i in range(timestamps)])
    return tokenizer


def whisper_generation_config(tokenizer, languages: list[str], suppress_tokens: list[int],
                              begin_suppress_tokens: list[int], **extra):
    """Whisper's generation settings for a tokenizer laid out by `whisper_tokenizer`: the language and task ids
    `generate(language=..., task=...)` looks up, the suppress lists, the start and end tokens."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    return GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=MAX_LABEL_TOKENS,
        begin_suppress_tokens=begin_suppress_tokens, suppress_tokens=suppress_tokens,
        is_multilingual=len(languages) > 1, lang_to_id={token: ids(token) for token in languages},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False, **extra)
