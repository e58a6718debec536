"""Charts agree with each other: one colour per model and state, whole optimizer steps, tick labels that do not
overlap at the size they are saved."""
import itertools

import matplotlib

matplotlib.use("Agg")

from lib import charts, families  # noqa: E402


def test_each_family_and_state_has_one_colour_of_its_own():
    names = families.names()
    colours = {(name, untrained): charts.colour(name, untrained) for name in names for untrained in (False, True)}
    assert len(set(colours.values())) == 2 * len(names)
    assert all(charts.colour(name, untrained) == c for (name, untrained), c in colours.items())  # the same every time


def overlapping(labels) -> list:
    renderer = labels[0].figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text() and t.get_visible()]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_loss_curves_tick_whole_steps_without_overlapping_labels(tmp_path):
    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 21)] + [{"step": 10, "eval_transcribe_loss": 1.2},
                                                                       {"step": 20, "eval_transcribe_loss": 0.9}]
    short = [{"step": 19, "loss": 1.0}, {"step": 20, "loss": 0.8}, {"step": 20, "eval_transcribe_loss": 0.9}]
    fig = charts.training_loss({"whisper": history, "e2e": short},  # steps 19-20: ticks at 19.2 ... by default
                               {"whisper": "Whisper", "e2e": f"wav2vec2 + mBART-50 ({families.TINY})"},
                               tmp_path / "loss.png")
    fig.canvas.draw()
    assert not overlapping([fig._suptitle, *(ax.title for ax in fig.axes)])  # a long model label wraps below it
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert not overlapping(ax.get_xticklabels()) and not overlapping(ax.get_yticklabels())
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
