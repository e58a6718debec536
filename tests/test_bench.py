"""The benchmarks' own logic: padding efficiency by hand, the training clock, and the GPU benchmark at tiny sizes on
the CPU."""
import json

import pytest

from bench import common, gpu, padding
from conftest import demo_slice
from lib import config, split, train


def test_padding_efficiency_counts_real_over_padded_samples():
    lengths = [10, 10, 2, 2]
    assert padding.efficiency(lengths, [0, 1, 2, 3], batch_size=2) == 1.0  # like with like
    assert padding.efficiency(lengths, [0, 2, 1, 3], batch_size=2) == pytest.approx(24 / 40)
    assert padding.efficiency([5, 3, 4], [0, 1, 2], batch_size=2) == pytest.approx(12 / 14)  # short last batch


@pytest.mark.slow
def test_gpu_benchmark_runs_every_case_at_tiny_size():
    results = gpu.main(["--tiny", "--steps", "1", "--warmup", "1"])
    assert [r["name"] for r in results] == [c.name for c in gpu.CASES]
    for result in results:
        assert result["samples_per_second"] > 0 and result["model_gflops_per_sample"] > 0
        assert 0 < result["parameters"]["trainable"] <= result["parameters"]["total"]
        assert result["mfu"] is None and result["peak_allocated_gib"] is None  # no GPU: nothing to claim
    lna, full = (next(r for r in results if r["name"] == name) for name in ("dev e2e (lna)",
                                                                            "dev e2e (full fine-tuning)"))
    assert lna["parameters"]["trainable"] < full["parameters"]["trainable"]
    written = json.loads((gpu.common.BENCH_DIR / "gpu-tiny.json").read_text())
    assert written["cases"] == results


@pytest.mark.slow
def test_the_step_clock_stops_at_the_last_optimizer_step(tmp_path):
    corpus, out = demo_slice(tmp_path / "corpus", per_speaker=1), tmp_path / "out"
    params = config.load("params/demo.yaml", config.parse_overrides([
        f"manifest={corpus}", f"output_dir={out}", f"whisper.model={out}/models/whisper-demo", "whisper.import_from=",
        "whisper.build_tiny=true", "whisper.epochs=1", "whisper.eval_segments=8", "whisper.max_length=24"]))
    split.run(params)
    clock = common.step_clock()
    summary = train.train(params, "whisper", callbacks=[clock])
    assert summary["global_step"] > 0
    # the closing evaluation (8 segments, both tasks, generated) and checkpoint come after the clock stopped
    assert 0 < clock.seconds < summary["train_seconds"]


def test_static_memory_counts_weights_for_all_and_optimizer_state_for_what_trains():
    results = {r["name"]: r for r in gpu.main(["--static-memory", "--tiny"])}
    assert set(results) == {c.name for c in gpu.CASES if c.name.startswith("dev")}
    for result in results.values():
        p = result["parameters"]
        assert result["weights_gradients_optimizer_bytes"] == 4 * p["total"] + 12 * p["trainable"] > 0
    lna, lora, full = (results[n]["parameters"]["trainable"] for n in ("dev e2e (lna)", "dev e2e, LoRA",
                                                                          "dev e2e (full fine-tuning)"))
    assert lora < lna < full
