"""Small-GPU and quick-run options: a frozen encoder, and LoRA adapters through peft.

- `freeze_encoder`: only the decoder trains (the reference script's `--freeze_encoder`). The encoder's backward pass
  and its optimizer state go away, so a step is several times cheaper and needs far less memory; but the acoustic
  adaptation lives in the encoder, so new voices and accents gain much less.
- `lora_rank` > 0: the model's weights stay frozen and low-rank adapters on `lora_targets` train (a few percent of the
  parameters, so little optimizer memory); checkpoints hold the adapters only, and `final/` gets them merged in, so
  evaluation and export see a plain model. With `freeze_encoder` as well, only the decoder's modules get adapters.
  Modules a family starts from random weights (`Family.new_modules`: the E2E adapter and bridge) train in full.
"""
from __future__ import annotations

from lib import config, families


def apply(family: families.Family, bundle: families.Bundle, hp: config.TrainingParams) -> dict:
    """Freeze the encoder and wrap the model in LoRA adapters as the params ask (`bundle.model` becomes the peft
    model); returns what the training summary reports."""
    encoder = family.encoder(bundle.model)
    if hp.freeze_encoder:
        for parameter in encoder.parameters():
            parameter.requires_grad = False
    if hp.lora_rank:
        from peft import LoraConfig, get_peft_model

        targets = list(hp.lora_targets)
        if hp.freeze_encoder:  # the targets by their full names, outside the encoder
            in_encoder = {id(m) for m in encoder.modules()}
            targets = [name for name, module in bundle.model.named_modules()
                       if name.rsplit(".", 1)[-1] in hp.lora_targets and id(module) not in in_encoder]
        present = {name.rsplit(".", 1)[-1] for name, _ in bundle.model.named_modules()}
        new = [m for m in family.new_modules if m in present] or None  # random at the start: trained in full
        bundle.model = get_peft_model(bundle.model, LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha,
                                                               target_modules=targets, modules_to_save=new,
                                                               lora_dropout=0.0, bias="none"))
    return {"freeze_encoder": hp.freeze_encoder, "lora": {"rank": hp.lora_rank, "alpha": hp.lora_alpha,
                                                          "targets": list(hp.lora_targets)} if hp.lora_rank else None}


def plain(model):
    """The model to save as `final/`: with LoRA, the adapters merged into the weights they adapt."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
