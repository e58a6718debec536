"""GPU budgets: a training-step loop at the real architecture sizes, random weights, no hub.

Each case builds its model from a config written out here (the sizes of the hub's config.json files), applies the
training set-up the pipeline uses (frozen feature encoder, LNA where the profile asks, gradient checkpointing without
the KV cache; for the "shared pass" cases one encoder pass per segment for its transcribe and translate rows, for
the LoRA cases rank-32 adapters on the modules params/dev.yaml's `lora_targets` name), and runs AdamW steps (fused
on CUDA, as the Trainer's default) under autocast in the profile's precision, fp16 with a gradient scaler, on
synthetic batches of the profile's size (segments, with two label rows each in the shared cases). Reported per case:
- samples/s (segments) and examples/s (label rows) over the timed steps (after warm-up steps);
- model FLOPs per sample, counted by torch's FlopCounterMode on one forward and backward of one sample without
  gradient checkpointing (the recomputation is not model work), and MFU = achieved model FLOP/s / the GPU's peak
  dense rate for the precision;
- peak memory allocated (and reserved) by PyTorch, and for the dev cases whether that plus the CUDA context (what
  the process holds on the device outside PyTorch's allocator, measured once) fits 4 GiB.

    python -m bench.gpu                # the dev and prod cases, on the GPU (meant to finish within 10 minutes)
    python -m bench.gpu --tiny         # tiny sizes on the CPU: checks the script itself (the tests run this)
    python -m bench.gpu --static-memory  # on any machine: what each dev case holds before activations
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import torch

from bench import common
from lib import adapters, config, families, precision
from lib.families import e2e

DEV_BUDGET_GIB = 4.0
# Peak dense tensor rates in TFLOP/s (fp16 = bf16) from the vendors' data sheets.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.5, "H100 NVL": 835.5, "H200": 989.4,
               "A100": 312.0, "L4": 121.0, "RTX 4090": 165.2, "RTX 3050": 35.6}


@dataclass
class Case:
    name: str
    model: str  # whisper-tiny, whisper-medium, wav2vec2-base+mbart-large-50, xls-r-300m+mbart-large-50
    precision: str
    batch_size: int
    lna: bool = False
    audio_seconds: float = 15.0  # E2E input length (Whisper always reads its 30 s window)
    label_tokens: int = 64
    shared: bool = False  # batch_size counts segments, each with a transcribe and a translate label on one encoder pass
    lora: int = 0  # LoRA rank (0: full fine-tuning)


CASES = [
    Case("dev whisper", "whisper-tiny", "fp16", 1),
    Case("dev whisper, shared pass", "whisper-tiny", "fp16", 1, shared=True),
    Case("dev whisper, LoRA", "whisper-tiny", "fp16", 1, shared=True, lora=32),
    Case("prod whisper", "whisper-medium", "bf16", 16),
    Case("prod whisper, shared pass", "whisper-medium", "bf16", 16, shared=True),  # as params/prod.yaml
    Case("dev e2e (lna)", "wav2vec2-base+mbart-large-50", "fp16", 1, lna=True),
    Case("dev e2e (lna), shared pass", "wav2vec2-base+mbart-large-50", "fp16", 1, lna=True, shared=True),
    Case("dev e2e (lna), 30 s segment", "wav2vec2-base+mbart-large-50", "fp16", 1, lna=True, audio_seconds=30.0),
    Case("dev e2e, LoRA", "wav2vec2-base+mbart-large-50", "fp16", 1, shared=True, lora=32),
    Case("dev e2e (full fine-tuning)", "wav2vec2-base+mbart-large-50", "fp16", 1),
    Case("prod e2e", "xls-r-300m+mbart-large-50", "bf16", 8),
    Case("prod e2e, shared pass", "xls-r-300m+mbart-large-50", "bf16", 8, shared=True),  # as params/prod.yaml
]
DEV_PARAMS = "params/dev.yaml"  # the LoRA cases train adapters where the dev profile puts them


def whisper_config(name: str, tiny: bool):
    from transformers import WhisperConfig

    width, layers, heads = {"whisper-tiny": (384, 4, 6), "whisper-medium": (1024, 24, 16)}[name]
    if tiny:
        width, layers, heads = 64, 1, 2
    return WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=width, encoder_layers=layers,
                         decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                         encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width, max_source_positions=1500,
                         max_target_positions=448, decoder_start_token_id=50258, pad_token_id=50257,
                         use_cache=False)


def e2e_model(name: str, tiny: bool):
    from transformers import (MBartConfig, MBartForCausalLM, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel,
                              Wav2Vec2Config, Wav2Vec2Model)

    encoder_name = name.split("+")[0]
    if encoder_name == "wav2vec2-base":
        encoder = Wav2Vec2Config()  # the defaults are wav2vec2-base
    else:  # xls-r-300m: the large layout with stable layer norm
        encoder = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                 intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                                 conv_bias=True)
    decoder = MBartConfig(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12,
                          encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                          decoder_ffn_dim=4096, max_position_embeddings=1024, scale_embedding=True,
                          is_decoder=True, add_cross_attention=True, use_cache=False)
    if tiny:
        encoder = Wav2Vec2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                                 conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16)
        decoder = MBartConfig(vocab_size=1000, d_model=64, encoder_layers=1, decoder_layers=1,
                              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                              decoder_ffn_dim=128, is_decoder=True, add_cross_attention=True, use_cache=False)
    encoder.add_adapter = True
    encoder.layerdrop = 0.0
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = e2e.MBART_DECODER_START, 1
    return SpeechEncoderDecoderModel(config=config, encoder=Wav2Vec2Model(encoder), decoder=MBartForCausalLM(decoder))


def build(case: Case, tiny: bool):
    """The model with the pipeline's training set-up (LoRA adapters and the shared encoder pass where the case asks),
    and a function making a synthetic batch of n samples (segments, with two label rows each when shared)."""
    from types import SimpleNamespace

    from transformers import WhisperForConditionalGeneration

    rows = 2 if case.shared else 1
    if case.model.startswith("whisper"):
        family, sizes = families.get("whisper"), whisper_config(case.model, tiny)
        model = WhisperForConditionalGeneration(sizes)
        frames, vocab = 2 * sizes.max_source_positions, sizes.vocab_size

        def inputs(n):
            return {"input_features": torch.randn(n, sizes.num_mel_bins, frames)}
    else:
        family, model = families.get("e2e"), e2e_model(case.model, tiny)
        e2e.freeze_for_training(model, lna=case.lna)
        samples, vocab = int(case.audio_seconds * 16_000), model.config.decoder.vocab_size

        def inputs(n):
            return {"input_values": torch.randn(n, samples), "attention_mask": torch.ones(n, samples, dtype=torch.long)}
    bundle = families.Bundle(model, None, None)
    if case.lora:
        dev = config.load(DEV_PARAMS).section(family.name)
        rank = 4 if tiny else case.lora  # rank 32 is not low on the tiny models' 64-wide layers
        adapters.apply(family, bundle, SimpleNamespace(freeze_encoder=False, lora_rank=rank,
                                                       lora_alpha=dev.lora_alpha, lora_targets=dev.lora_targets))
    if case.shared:
        families.share_encoder(family, bundle)

    def batch(n):
        made = {**inputs(n), "labels": torch.randint(4, vocab, (n * rows, case.label_tokens))}
        return {**made, "segment_index": torch.arange(n).repeat_interleave(rows)} if case.shared else made
    return bundle.model, batch


def model_flops_per_sample(model, batch, device, dtype) -> float:
    """FLOPs of one forward and backward of one sample, without gradient checkpointing."""
    from torch.utils.flop_counter import FlopCounterMode

    model.activation_checkpointing_disable()
    inputs = {k: v.to(device) for k, v in batch(1).items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def cuda_context_bytes() -> int:
    """What this process holds on the GPU outside PyTorch's allocator (the CUDA context and its libraries' handles),
    read after one small matrix product: device memory in use minus what PyTorch has reserved. Assumes the GPU is
    otherwise idle."""
    a = torch.ones(256, 256, device="cuda")
    (a @ a).sum().item()
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def run_case(case: Case, tiny: bool, steps: int, warmup: int, context_bytes: int = 0) -> dict:
    if tiny:  # short inputs: the tiny wav2vec2 keeps many frames, and attention over them is quadratic
        case = dataclasses.replace(case, audio_seconds=1.0, label_tokens=8)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = precision.dtype(case.precision, device)
    torch.manual_seed(0)
    model, batch = build(case, tiny)
    model.to(device).train()
    flops = model_flops_per_sample(model, batch, device, dtype)
    model.activation_checkpointing_enable()  # what the Trainer calls for activation_checkpointing=True
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    inputs = {k: v.to(device) for k, v in batch(case.batch_size).items()}
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            began = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    seconds = time.perf_counter() - began
    samples_per_second = steps * case.batch_size / seconds
    peak = _peak_tflops(device, dtype)
    result = {**case.__dict__, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
              "parameters": families.count_parameters(model), "samples_per_second": round(samples_per_second, 2),
              "examples_per_second": round(samples_per_second * (2 if case.shared else 1), 2),
              "model_gflops_per_sample": round(flops / 1e9, 3),
              "achieved_tflops": round(flops * samples_per_second / 1e12, 2),
              "mfu": round(flops * samples_per_second / (peak * 1e12), 4) if peak else None,
              "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda"
              else None,
              "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if device.type == "cuda"
              else None}
    if case.name.startswith("dev") and device.type == "cuda":
        held = torch.cuda.max_memory_reserved() + context_bytes
        result["with_context_gib"] = round(held / 2**30, 2)
        result["fits_4_gib"] = held < DEV_BUDGET_GIB * 2**30
    del model, optimizer, inputs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def static_memory(case: Case, tiny: bool) -> dict:
    """What a case holds before any activation, counted on the CPU: fp32 weights (autocast keeps them), and for what
    trains fp32 gradients and AdamW's two moments."""
    model, _ = build(case, tiny)
    parameters = families.count_parameters(model)
    held = parameters["total"] * 4 + parameters["trainable"] * (4 + 8)
    return {"name": case.name, "parameters": parameters, "weights_gradients_optimizer_bytes": held,
            "weights_gradients_optimizer_gib": round(held / 2**30, 2)}


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_tflops(device, dtype) -> float | None:
    if device.type != "cuda" or dtype == torch.float32:
        return None
    name = torch.cuda.get_device_name()
    return next((rate for key, rate in PEAK_TFLOPS.items() if key in name), None)


def static_memories(tiny: bool) -> list[dict]:
    """`static_memory` of every dev case, printed and written to outputs/bench/gpu-static-memory(-tiny).json."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    results = []
    for case in (c for c in CASES if c.name.startswith("dev")):
        results.append(static_memory(case, tiny))
        p = results[-1]["parameters"]
        print(f"{case.name:<30} {p['total'] / 1e6:8.1f} M parameters, {p['trainable'] / 1e6:8.1f} M trainable: "
              f"{results[-1]['weights_gradients_optimizer_gib']:.2f} GiB before activations", flush=True)
    common.atomic.write_json(common.BENCH_DIR / f"gpu-static-memory{'-tiny' if tiny else ''}.json",
                             {"machine": common.machine(), "cases": results})
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (checks the script on a CPU)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    parser.add_argument("--static-memory", action="store_true",
                        help="the dev cases' weights, gradients and optimizer state, counted on the CPU")
    args = parser.parse_args(argv)
    if args.static_memory:
        return static_memories(args.tiny)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no GPU here: run with --tiny to check the script on the CPU")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # building a SpeechEncoderDecoderModel prints whole configs
    context = cuda_context_bytes() if torch.cuda.is_available() else 0
    results = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        result = run_case(case, args.tiny, args.steps, args.warmup, context)
        results.append(result)
        print(f"{case.name:<30} {result['examples_per_second']:>8.2f} examples/s  MFU {result['mfu']}  "
              f"peak {result['peak_allocated_gib']} GiB allocated, {result['peak_reserved_gib']} GiB reserved"
              + (f", {result['with_context_gib']} GiB with the CUDA context" if "with_context_gib" in result else ""),
              flush=True)
    common.atomic.write_json(common.BENCH_DIR / ("gpu-tiny.json" if args.tiny else "gpu.json"),
                             {"machine": common.machine(), "steps": args.steps, "warmup": args.warmup,
                              "cuda_context_gib": round(context / 2**30, 2), "cases": results})
    return results


if __name__ == "__main__":
    main()
