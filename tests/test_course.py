"""Course models: trained once, found again, never stale, retrained when damaged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import cutpaste_lib
from cutpaste_lib import config, course
from cutpaste_lib.data import load_cache
from cutpaste_lib.train import RESUME_KEYS

TINY = config.Settings(
    name="tiny",
    image_size=32,
    steps=3,
    batch_size=2,
    patch_size=16,
    dense_patch=8,
    dense_stride=4,
    synth_size=64,
    synth_train=12,
    patch_steps=2,
    head_depth=1,
)


@pytest.fixture(scope="module")
def cache(synthetic_root):
    return load_cache(synthetic_root, "synth_grid", "train", 32)


def _changed(name, value):
    if isinstance(value, bool):
        return not value
    if value is None:
        return 16
    if isinstance(value, str):
        return {"variant": "cutpaste", "encoder": "resnet34", "protocol": "transfer"}.get(
            name, "adamw" if value == "sgd" else "sgd"
        )
    return value * 2 if value else 1


def test_key_changes_with_every_setting_and_with_the_data(cache):
    cfg = course.course_config(TINY, "image", device="cpu")
    base = course.key_digest(course.model_key(cfg, cache))
    assert base == course.key_digest(course.model_key(cfg, cache))  # deterministic
    for name in RESUME_KEYS:
        change = {name: _changed(name, getattr(cfg, name))}
        if name == "protocol":  # fine-tuning needs ImageNet weights
            change.update(pretrained=True, warmup_steps=1)
        other = dataclasses.replace(cfg, **change)
        assert course.key_digest(course.model_key(other, cache)) != base, name
    # one pixel of one training image
    images = cache.images.clone()
    images[3, 1, 5, 7] ^= 1
    edited = dataclasses.replace(cache, images=images)
    assert course.key_digest(course.model_key(cfg, edited)) != base
    # another library version
    key = course.model_key(cfg, cache)
    assert course.key_digest({**key, "library": key["library"] + "+1"}) != base
    assert key["library"] == cutpaste_lib.__version__


def test_patch_and_image_configs_differ_only_where_they_should():
    image = course.course_config(TINY, "image", device="cpu")
    patch = course.course_config(TINY, "patch", device="cpu")
    assert (image.patch_size, patch.patch_size) == (None, TINY.patch_size)
    assert (image.steps, patch.steps) == (TINY.steps, TINY.patch_steps)
    assert image.head_depth == patch.head_depth == TINY.head_depth
    with pytest.raises(ValueError, match="kind"):
        course.course_config(TINY, "pixel")


def test_trained_once_then_loaded_with_the_same_weights(cache, tmp_path):
    messages = []
    first = course.course_model(
        cache, settings=TINY, device="cpu", root=tmp_path, progress=False, echo=messages.append
    )
    assert first.trained_now and any("training" in m for m in messages)
    second = course.course_model(
        cache, settings=TINY, device="cpu", root=tmp_path, progress=False, echo=messages.append
    )
    assert not second.trained_now and second.folder == first.folder
    assert second.train_seconds == pytest.approx(first.train_seconds)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == [first.folder.name]  # no partial folder left
    # other settings: another entry, trained, not the stored one
    longer = dataclasses.replace(TINY, steps=4)
    third = course.course_model(
        cache, settings=longer, device="cpu", root=tmp_path, progress=False, echo=messages.append
    )
    assert third.trained_now and third.folder != first.folder


def test_a_damaged_entry_is_retrained_with_a_message(cache, tmp_path):
    first = course.course_model(cache, settings=TINY, device="cpu", root=tmp_path, progress=False)
    ckpt = first.folder / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    messages = []
    again = course.course_model(
        cache, settings=TINY, device="cpu", root=tmp_path, progress=False, echo=messages.append
    )
    assert again.trained_now
    assert any("damaged" in m and str(first.folder) in m for m in messages)
    # a description of another model in the folder is not trusted either
    (again.folder / "course.json").write_text('{"format": "cutpaste-course-model", "key": {}}')
    messages.clear()
    assert course.course_model(
        cache, settings=TINY, device="cpu", root=tmp_path, progress=False, echo=messages.append
    ).trained_now
    assert any("does not describe this model" in m for m in messages)


def test_hours_of_cpu_training_need_confirmation(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(course, "estimate_seconds", lambda *a, **k: 21 * 86400.0)
    monkeypatch.delenv(course.CONFIRM_ENV, raising=False)
    with pytest.raises(course.LongTrainingError, match=r"21\.0 days.*CUTPASTE_PROTOCOL=laptop"):
        course.course_model(cache, settings=TINY, device="cpu", root=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written
    monkeypatch.setenv(course.CONFIRM_ENV, "1")
    assert course.course_model(
        cache, settings=TINY, device="cpu", root=tmp_path, progress=False, echo=lambda m: None
    ).trained_now


def test_estimate_scales_with_steps_and_batch_and_cancels_the_setup_cost(cache, monkeypatch):
    """Runs of 1 and 1 + k probe steps are timed: their difference is k steps, whatever it costs to
    build the model (which a single timed run would multiply by the step count)."""
    clock = [0.0]
    probes = []

    def fake_train(cfg, probe_cache, *, progress, stop_at_step):
        probes.append((cfg.batch_size, cfg.image_size, stop_at_step, len(probe_cache)))
        clock[0] += 7.0 + 1.5 * stop_at_step  # 7 s to build the model, 1.5 s per probe step

    monkeypatch.setattr(course, "train", fake_train)
    monkeypatch.setattr(course.time, "perf_counter", lambda: clock[0])
    cfg = course.course_config(TINY, "image", device="cpu")
    # TINY's batch (2) is below the probe's 4 originals: the probe runs the real batch
    assert course.estimate_seconds(cfg, cache) == pytest.approx(1.5 * cfg.steps)
    assert [p[2] for p in probes] == [1, 3, 1]  # warm-up, then 1 + 2 and 1 steps
    assert {p[:2] for p in probes} == {(2, 32)} and {p[3] for p in probes} == {8}
    big = dataclasses.replace(cfg, batch_size=32)
    probes.clear()
    assert course.estimate_seconds(big, cache) == pytest.approx(1.5 * 32 / 4 * cfg.steps)
    assert {p[0] for p in probes} == {4}


def test_durations_read_well():
    assert course.format_duration(30) == "1 min"
    assert course.format_duration(4 * 60) == "4 min"
    assert course.format_duration(5 * 3600) == "5.0 h"
    assert course.format_duration(21.4 * 86400) == "21.4 days"


def test_protocol_switch(monkeypatch):
    monkeypatch.delenv("CUTPASTE_PROTOCOL", raising=False)
    monkeypatch.delenv("CUTPASTE_FAST", raising=False)
    assert config.settings() is config.LAPTOP  # safe default: the CPU protocol
    monkeypatch.setenv("CUTPASTE_FAST", "1")
    assert config.settings() is config.LAPTOP  # CI trains what the stored notebooks show
    monkeypatch.setenv("CUTPASTE_PROTOCOL", "paper")
    assert config.settings() is config.PAPER
    monkeypatch.setenv("CUTPASTE_PROTOCOL", "weeks")
    with pytest.raises(ValueError, match="CUTPASTE_PROTOCOL='weeks'"):
        config.settings()


def test_the_laptop_protocol_keeps_the_papers_model_and_task():
    """What the laptop protocol changes is listed in the README; everything else is the paper's."""
    laptop, paper = config.LAPTOP.as_dict(), config.PAPER.as_dict()
    differing = {k for k in laptop if laptop[k] != paper[k]}
    assert differing == {
        "name",
        "image_size",
        "steps",
        "batch_size",
        "patch_size",
        "dense_patch",
        "synth_size",
        "patch_steps",
        "lr",
        "optimizer",
        "head_depth",
        "patch_batch_size",
        "scar_reference",
    }
    assert laptop["encoder"] == "resnet18" and laptop["dense_stride"] == paper["dense_stride"]
    # the patch model keeps the paper's ratios: crop = image / 2 (64 of 256 is / 4), dense = crop / 2
    assert laptop["dense_patch"] * 2 == laptop["patch_size"]
