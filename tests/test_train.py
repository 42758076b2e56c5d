"""Training loop: paper defaults, schedule, sampling, exact resume, checkpoint errors, divergence, CLI."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import signal
import threading

import numpy as np
import pytest
import torch
import torchvision
from scipy.stats import chisquare
from sklearn.metrics import confusion_matrix

from cutpaste_lib import cli
from cutpaste_lib.augment import ProxyCompiler, make_proxy_batch
from cutpaste_lib.config import REPO_ROOT
from cutpaste_lib.data import ImageCache, normalize
from cutpaste_lib.errors import CheckpointError, TrainingDivergedError
from cutpaste_lib.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingInterrupted,
    compile_model,
    load_checkpoint,
    lr_schedule,
    proxy_confusion,
    proxy_step,
    read_checkpoint,
    sample_originals,
    train,
)
from cutpaste_lib.train import loop as train_loop
from cutpaste_lib.train.determinism import CUBLAS_WORKSPACE_ENV, deterministic_mode


def tiny_cache(n: int = 6, size: int = 32, category: str = "toy") -> ImageCache:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageCache(
        images=images,
        masks=None,
        labels=torch.zeros(n, dtype=torch.long),
        defects=["good"] * n,
        paths=[None] * n,
        category=category,
        split="train",
    )


def cli_train_argv(data, out, *extra: str) -> list[str]:
    """``cutpaste train`` on synth_grid at 32 px on the CPU with the cheap encoder, no progress bar."""
    return [
        "train",
        "--data",
        str(data),
        "--category",
        "synth_grid",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--encoder",
        "shufflenet_v2_x0_5",
        *extra,
    ]


def tiny_config(**kw) -> TrainConfig:
    # shufflenet: the cheapest torchvision encoder with batch norm (resnet18 where its names matter)
    base = dict(
        encoder="shufflenet_v2_x0_5",
        steps=4,
        batch_size=2,
        image_size=32,
        device="cpu",
        log_every=1,
        checkpoint_every=100,
        head_depth=2,
        head_width=64,
        embedding_dim=16,
    )
    base.update(kw)
    return TrainConfig(**base)


def signal_during_step(monkeypatch, step: int, *signums: int) -> None:
    """Deliver ``signums`` to this process, in order, at the end of update ``step`` (1-based)."""
    real, calls = train_loop.proxy_step, []

    def proxy_step(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == step:
            for signum in signums:
                signal.raise_signal(signum)
        return out

    monkeypatch.setattr(train_loop, "proxy_step", proxy_step)  # where train() looks it up


@pytest.fixture
def sigint_default():
    """SIGINT raises ``KeyboardInterrupt`` during the test, whatever pytest inherited.

    A shell starts a background job (``make test &``) with SIGINT ignored (SIG_IGN), and training
    leaves an ignored signal ignored, so the Ctrl-C tests set the disposition they rely on and put
    the inherited one back after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigterm_guard():
    """A SIGTERM handler that raises instead of killing pytest (restored after the test)."""

    def guard(signum, frame):
        raise RuntimeError("SIGTERM reached the handler that was there before training")

    previous = signal.signal(signal.SIGTERM, guard)
    yield guard
    signal.signal(signal.SIGTERM, previous)


def test_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.variant, c.encoder, c.steps, c.batch_size) == ("3way", "resnet18", 65_536, 32)
    assert (c.lr, c.momentum, c.weight_decay, c.image_size) == (0.03, 0.9, 3e-5, 256)
    assert (c.head_depth, c.head_width, c.embedding_dim) == (8, 512, 128)
    assert c.pretrained is False and c.weights is None and c.patch_size is None
    assert c.inputs_per_step == 96 and TrainConfig(variant="scar").inputs_per_step == 64
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({**c.to_dict(), "epochs": 3})


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"variant": "4way"}, "variant"),
        ({"steps": 0}, "steps"),
        ({"lr": float("nan")}, "lr"),
        ({"patch_size": 512}, "patch_size"),
        ({"encoder": "resnet19"}, "unknown encoder"),
        ({"protocol": "transfer"}, "pretrained=True or weights"),
    ],
)
def test_bad_config_values_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_schedule_is_one_cosine_cycle_per_update():
    config = TrainConfig(steps=1000)
    lr = lr_schedule(config)
    # reference: torch's CosineAnnealingLR stepped once per update
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.03)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    expected = []
    for _ in range(1000):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lr, expected, rtol=1e-9, atol=1e-12)
    assert lr[0] == 0.03 and lr[500] == pytest.approx(0.015) and np.all(np.diff(lr) < 0)
    transfer = lr_schedule(
        TrainConfig(steps=100, pretrained=True, protocol="transfer", warmup_steps=20)
    )
    assert transfer[0] == 0.03 and transfer[20] == 1e-4 and len(transfer) == 100


def test_originals_are_drawn_uniformly_with_replacement():
    n = 5
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([sample_originals(images, 50, generator=g) for _ in range(100)])
    assert drawn.dtype == torch.float32 and drawn.shape == (5000, 3, 2, 2)
    ids = drawn[:, 0, 0, 0] * 255
    assert torch.equal(ids, ids.round()) and torch.all(drawn == drawn[:, :1, :1, :1])
    counts = np.bincount(ids.round().long().numpy(), minlength=n)
    assert chisquare(counts).pvalue > 1e-3  # uniform over the cache
    first = sample_originals(images, 50, generator=torch.Generator().manual_seed(1))
    assert len(torch.unique(first[:, 0, 0, 0])) < 50  # with replacement: repeats in one batch


def test_resume_continues_bit_for_bit(tmp_path):
    """k steps of a 2k-step run, then resume, gives exactly the 2k uninterrupted parameters.

    On CPU every op is deterministic for a fixed thread count, and the checkpoint restores the
    model, the momentum buffers, the step (so the cosine schedule) and every RNG state, so the
    comparison is bitwise (torch.equal), not approximate.
    """
    cache, config = tiny_cache(), tiny_config(steps=4)
    whole = train(config, cache, out_dir=tmp_path / "whole", progress=False)
    first = train(config, cache, out_dir=tmp_path / "split", progress=False, stop_at_step=2)
    assert read_checkpoint(first.checkpoint)["step"] == 2
    resumed = train(config, cache, out_dir=tmp_path / "split", resume=True, progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert whole.history["loss"] == resumed.history["loss"]
    assert whole.history["step"] == resumed.history["step"] == [1, 2, 3, 4]
    # and the interruption really happened in the middle: the first half differs from the end
    assert not torch.equal(first.model.classifier.weight, resumed.model.classifier.weight)
    assert read_checkpoint(resumed.checkpoint)["step"] == 4


def test_adamw_resumes_bit_for_bit_and_is_a_resume_key(tmp_path):
    """The laptop protocol's optimizer: its moment buffers travel in the checkpoint like SGD's
    momentum, and resuming an AdamW run as SGD (or a pre-optimizer-field SGD run as AdamW) is refused."""
    cache, config = tiny_cache(), tiny_config(steps=4, optimizer="adamw", lr=1e-3)
    whole = train(config, cache, out_dir=tmp_path / "whole", progress=False)
    train(config, cache, out_dir=tmp_path / "split", progress=False, stop_at_step=2)
    state = read_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert "exp_avg_sq" in next(
        iter(state["optimizer"]["state"].values())
    )  # AdamW state, not SGD's
    resumed = train(config, cache, out_dir=tmp_path / "split", resume=True, progress=False)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    train(config, cache, out_dir=tmp_path / "again", progress=False, stop_at_step=2)
    with pytest.raises(CheckpointError, match="optimizer='adamw' but optimizer='sgd'"):
        train(
            tiny_config(steps=4, lr=1e-3),
            cache,
            out_dir=tmp_path / "again",
            resume=True,
            progress=False,
        )
    # a checkpoint written before the optimizer field existed was trained with SGD
    sgd = tiny_config(steps=4)
    train(sgd, cache, out_dir=tmp_path / "old", progress=False, stop_at_step=2)
    path = tmp_path / "old" / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["config"]["optimizer"]
    torch.save(old, path)
    train(sgd, cache, out_dir=tmp_path / "old", resume=True, progress=False)


def test_the_training_step_draws_scars_at_the_configs_reference(monkeypatch):
    import cutpaste_lib.train.step as step_module

    seen = []
    real = step_module.make_proxy_batch

    def spy(*args, **kwargs):
        seen.append(kwargs.get("scar_reference"))
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "make_proxy_batch", spy)
    for reference in (256, 128):
        train(tiny_config(steps=1, scar_reference=reference), tiny_cache(), progress=False)
    assert seen == [256, 128]
    with pytest.raises(ValueError, match="scar_reference"):
        TrainConfig(scar_reference=0)


def test_adamw_and_sgd_take_different_steps_from_the_same_start():
    cache = tiny_cache()
    a = train(tiny_config(steps=2, lr=1e-3), cache, progress=False).model
    b = train(tiny_config(steps=2, lr=1e-3, optimizer="adamw"), cache, progress=False).model
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        tiny_config(optimizer="adam")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_the_step_and_resumes_bit_for_bit(
    tmp_path, monkeypatch, sigint_default, sigterm_guard, signum
):
    """A first SIGINT/SIGTERM finishes the step, checkpoints it like a periodic checkpoint and
    stops; resuming gives exactly the uninterrupted run's weights and history."""
    cache, config = tiny_cache(), tiny_config(steps=4)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    whole = train(config, cache, out_dir=tmp_path / "whole", progress=False)
    signal_during_step(monkeypatch, 2, signum)
    with pytest.raises(TrainingInterrupted) as info:
        train(config, cache, out_dir=tmp_path / "split", progress=False)
    exc = info.value
    assert (exc.step, exc.steps, exc.signal_name) == (2, 4, signal.Signals(signum).name)
    assert exc.checkpoint == tmp_path / "split" / CHECKPOINT_NAME
    assert f"after step 2 of 4; its checkpoint is {exc.checkpoint}" in str(exc)
    assert vars(pickle.loads(pickle.dumps(exc))) == vars(exc)  # crosses process pools
    assert {s: signal.getsignal(s) for s in before} == before  # handlers put back
    state = read_checkpoint(exc.checkpoint)
    assert state["step"] == 2 and state["history"]["step"] == [1, 2]
    assert json.loads((tmp_path / "split" / "config.json").read_text())["step"] == 2
    monkeypatch.undo()
    resumed = train(config, cache, out_dir=tmp_path / "split", resume=True, progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in ("step", "loss", "accuracy", "lr"):  # images_per_s is a timing
        assert whole.history[key] == resumed.history[key], key
    assert {s: signal.getsignal(s) for s in before} == before


def test_second_ctrl_c_interrupts_at_once(tmp_path, monkeypatch, sigint_default):
    previous = signal.getsignal(signal.SIGINT)
    signal_during_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as info:
        train(tiny_config(steps=4), tiny_cache(), out_dir=tmp_path, progress=False)
    assert type(info.value) is KeyboardInterrupt  # not the graceful stop after the step
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    assert signal.getsignal(signal.SIGINT) is previous


def test_without_out_dir_ctrl_c_keeps_its_usual_effect(monkeypatch, sigint_default):
    signal_during_step(monkeypatch, 1, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as info:
        train(tiny_config(steps=3), tiny_cache(), progress=False)
    assert type(info.value) is KeyboardInterrupt


def test_an_ignored_ctrl_c_stays_ignored(tmp_path, monkeypatch):
    """SIGINT set to SIG_IGN (a background job): training installs nothing for it and finishes."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        signal_during_step(monkeypatch, 2, signal.SIGINT)
        result = train(tiny_config(steps=4), tiny_cache(), out_dir=tmp_path, progress=False)
        assert result.history["step"] == [1, 2, 3, 4]
        assert read_checkpoint(result.checkpoint)["step"] == 4
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def _determinism_flags() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )


@pytest.mark.parametrize("env_before", [None, ":16:8"], ids=["unset", "set"])
@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_deterministic_mode_restores_what_it_sets(monkeypatch, env_before, raises, enabled):
    """The environment variable and torch's flags are as before the block, also after an error."""
    if env_before is None:
        monkeypatch.delenv(CUBLAS_WORKSPACE_ENV, raising=False)
    else:
        monkeypatch.setenv(CUBLAS_WORKSPACE_ENV, env_before)
    saved = _determinism_flags()
    try:
        # a non-default state, so that "restored" is not "reset to the defaults"
        torch.use_deterministic_algorithms(False, warn_only=False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
        before = _determinism_flags()
        with pytest.raises(RuntimeError, match="body") if raises else contextlib.nullcontext():
            with deterministic_mode(enabled, torch.device("cpu")):
                inside = (_determinism_flags(), os.environ.get(CUBLAS_WORKSPACE_ENV))
                if raises:
                    raise RuntimeError("body")
        if enabled:
            assert inside == ((True, True, False, True), env_before or ":4096:8")
        else:
            assert inside == ((False, False, False, False), env_before)  # CPU: no cuDNN autotuning
        assert _determinism_flags() == before
        assert os.environ.get(CUBLAS_WORKSPACE_ENV) == env_before
        assert (CUBLAS_WORKSPACE_ENV in os.environ) == (env_before is not None)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


def test_training_outside_the_main_thread_installs_no_handlers(tmp_path):
    outcome: list = []

    def work():
        try:
            outcome.append(
                train(tiny_config(steps=1), tiny_cache(), out_dir=tmp_path, progress=False)
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not isinstance(outcome[0], BaseException), outcome[0]
    assert outcome[0].history["step"] == [1]


def test_checkpoint_config_and_tensorboard_outputs(tmp_path):
    cache, config = tiny_cache(), tiny_config(steps=3, log_every=2, checkpoint_every=2)
    result = train(config, cache, out_dir=tmp_path, progress=False)
    assert result.checkpoint == tmp_path / CHECKPOINT_NAME
    assert result.history["step"] == [2, 3]
    assert result.history["lr"] == pytest.approx([lr_schedule(config)[1], lr_schedule(config)[2]])
    state = read_checkpoint(result.checkpoint)
    assert state["step"] == 3 and state["config"] == config.to_dict()
    assert state["optimizer"]["state"] and set(state["rng"]) >= {"torch", "augment", "cuda"}
    model, cfg = load_checkpoint(result.checkpoint)
    assert not model.training and cfg["variant"] == "3way" and cfg["step"] == 3
    assert cfg["category"] == "toy" and cfg["model"]["num_classes"] == 3
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["step"] == 3 and saved["batch_size"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"train/loss", "train/accuracy", "train/lr", "train/images_per_s"}
    logged = [e.value for e in events.Scalars("train/loss")]
    assert logged == pytest.approx(result.history["loss"], rel=1e-6)


def test_incompatible_foreign_and_corrupt_checkpoints_are_errors(tmp_path):
    cache = tiny_cache()
    train(tiny_config(steps=1), cache, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="variant='3way' but variant='scar'"):
        train(
            tiny_config(steps=1, variant="scar"),
            cache,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    with pytest.raises(
        CheckpointError, match="encoder='shufflenet_v2_x0_5' but encoder='resnet18'"
    ):
        train(tiny_config(steps=1, encoder="resnet18"), cache, out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="trained on .*'other'"):
        train(tiny_config(steps=1), tiny_cache(category="other"), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="already exists"):
        train(tiny_config(steps=1), cache, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train(tiny_config(steps=1), cache, out_dir=tmp_path / "empty", resume=True)

    foreign = tmp_path / "foreign.pt"
    torch.save(torchvision.models.resnet18().state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a CutPaste training checkpoint"):
        load_checkpoint(foreign)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / CHECKPOINT_NAME).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    pickled = tmp_path / "code.pt"
    torch.save({"format": "cutpaste-checkpoint", "obj": np.random.default_rng(0)}, pickled)
    with pytest.raises(CheckpointError, match="not a tensor-only file"):
        load_checkpoint(pickled)
    text = tmp_path / "notes.txt"
    text.write_text("step 3 looked fine\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(text)
    message = str(info.value)
    assert message == (
        f"cannot read checkpoint {text}: not a PyTorch checkpoint/state dict "
        "(file is corrupt or of another kind)"
    )
    with pytest.raises(ValueError, match="resume=True continues .* overwrite=True replaces"):
        train(tiny_config(steps=1), cache, out_dir=tmp_path, resume=True, overwrite=True)


def test_checkpoint_without_required_keys_is_named_error(tmp_path):
    cache, config = tiny_cache(), tiny_config(steps=1)
    train(config, cache, out_dir=tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    del state["config"], state["rng"]
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "no 'config', 'rng'" in str(info.value)
    with pytest.raises(CheckpointError, match="no 'config', 'rng'"):
        train(config, cache, out_dir=tmp_path, resume=True, progress=False)


def test_non_finite_loss_stops_training_and_writes_no_checkpoint(tmp_path):
    config = tiny_config(
        steps=4, lr=1e30, deterministic=True
    )  # the first update blows the weights up
    with pytest.raises(TrainingDivergedError, match="loss became (nan|inf)"):
        train(config, tiny_cache(), out_dir=tmp_path, progress=False)
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    assert (
        not torch.are_deterministic_algorithms_enabled()
    )  # global switch restored after the error


def test_figures_plot_the_numbers_they_are_given():
    from cutpaste_lib.viz.training import plot_confusion, plot_history, plot_lr_schedule

    matrix = np.array([[8, 0, 0], [2, 6, 0], [0, 4, 4]])
    fig = plot_confusion(matrix)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), matrix / 8)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["normal", "CutPaste", "Scar"]
    schedule = lr_schedule(TrainConfig(steps=10))
    np.testing.assert_array_equal(plot_lr_schedule(schedule).axes[0].lines[0].get_ydata(), schedule)
    history = {
        "step": [1, 2],
        "loss": [1.1, 0.9],
        "accuracy": [0.3, 0.5],
        "lr": [0.1, 0.05],
        "images_per_s": [5.0, 6.0],
    }
    fig = plot_history(history, chance=1 / 3)
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.1, 0.9]
    assert list(fig.axes[1].lines[0].get_ydata()) == [0.3, 0.5]
    assert fig.axes[0].lines[1].get_ydata()[0] == pytest.approx(math.log(3))


def test_transfer_protocol_freezes_encoder_then_its_batchnorm(tmp_path):
    torch.manual_seed(3)
    weights = tmp_path / "imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    start = torch.load(weights, weights_only=True)
    config = tiny_config(
        steps=2,
        encoder="resnet18",
        weights=str(weights),
        protocol="transfer",
        warmup_steps=1,
        checkpoint_every=1,
    )
    cache = tiny_cache()
    warm = train(config, cache, out_dir=tmp_path / "run", progress=False, stop_at_step=1)
    enc = {k: v for k, v in warm.model.encoder.state_dict().items()}
    for key, value in start.items():
        if not key.startswith("fc."):
            assert torch.equal(enc[key], value), f"{key} changed during the head-only warm-up"
    done = train(config, cache, out_dir=tmp_path / "run", resume=True, progress=False)
    enc = done.model.encoder.state_dict()
    assert not torch.equal(enc["conv1.weight"], start["conv1.weight"])  # fine-tuned
    for key in ("bn1.weight", "bn1.bias", "bn1.running_mean", "layer4.1.bn2.running_var"):
        assert torch.equal(enc[key], start[key]), f"{key} changed although BN is frozen"


def test_proxy_confusion_matches_sklearn():
    cache = tiny_cache(size=32)
    torch.manual_seed(0)
    from cutpaste_lib.model import CutPasteModel

    model = CutPasteModel(
        encoder="shufflenet_v2_x0_5", num_classes=3, head_depth=1, head_width=16, embedding_dim=8
    ).eval()
    matrix = proxy_confusion(model, cache, "3way", batches=2, batch_size=4, seed=5)
    g = torch.Generator().manual_seed(5)
    truth, predicted = [], []
    with torch.no_grad():
        for _ in range(2):
            batch = make_proxy_batch(
                sample_originals(cache.images, 4, generator=g), "3way", generator=g
            )
            truth.append(batch.labels)
            predicted.append(model(normalize(batch.images)).logits.argmax(1))
    expected = confusion_matrix(torch.cat(truth), torch.cat(predicted), labels=[0, 1, 2])
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum(axis=1).tolist() == [8, 8, 8]


@pytest.mark.parametrize(
    ("variant", "patch_size", "scar_reference"), [("3way", None, 128), ("scar", 16, 64)]
)
def test_proxy_accuracy_measures_the_task_in_the_train_config(
    monkeypatch, variant, patch_size, scar_reference
):
    from cutpaste_lib.model import CutPasteModel
    from cutpaste_lib.train import TrainConfig, confusion, proxy_accuracy

    cache = tiny_cache(size=32)
    torch.manual_seed(0)
    model = CutPasteModel(
        encoder="shufflenet_v2_x0_5",
        num_classes=3 if variant == "3way" else 2,
        head_depth=1,
        head_width=16,
        embedding_dim=8,
    ).eval()
    cfg = TrainConfig(
        variant=variant, image_size=32, patch_size=patch_size, scar_reference=scar_reference
    )
    seen = []

    def spy(originals, variant, **kwargs):
        seen.append((originals.shape[0], variant, kwargs["patch_size"], kwargs["scar_reference"]))
        return make_proxy_batch(originals, variant, **kwargs)

    monkeypatch.setattr(confusion, "make_proxy_batch", spy)
    accuracy = proxy_accuracy(model, cache, cfg, device="cpu")
    # the reported measurement: 8 batches of 16 originals, on the variant, crops and scars trained
    assert seen == [(16, variant, patch_size, scar_reference)] * 8
    matrix = confusion.proxy_confusion(
        model,
        cache,
        variant,
        batches=8,
        batch_size=16,
        patch_size=patch_size,
        seed=1,
        scar_reference=scar_reference,
    )
    assert accuracy == pytest.approx(np.trace(matrix) / matrix.sum())


# ====== CLI ======
def test_cli_trains_and_writes_the_output_folder(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = cli_train_argv(
        synthetic_root,
        out,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--log-every",
        "1",
        "--variant",
        "scar",
    )
    assert cli.main(argv) == 0
    assert (out / "checkpoint.pt").is_file() and (out / "config.json").is_file()
    assert any((out / "tb").iterdir())
    model, cfg = load_checkpoint(out / "checkpoint.pt")
    assert cfg["variant"] == "scar" and cfg["steps"] == cfg["step"] == 3 and cfg["image_size"] == 32
    assert cfg["category"] == "synth_grid" and model.classifier.out_features == 2
    assert "checkpoint:" in capsys.readouterr().out
    # running it again without --resume/--overwrite does not clobber the checkpoint
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 0  # finished run: nothing left to do, still fine


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--encoder", "resnet19"], "unknown encoder 'resnet19'"),
        (
            ["--pretrained", "--weights", str(REPO_ROOT / "pyproject.toml")],
            "not allowed with argument",
        ),
        (["--steps", "0"], "expected a positive integer"),
        (["--variant", "4way"], "invalid choice"),
        (["--lr", "-1"], "expected a positive finite number"),
        (["--scar-reference", "0"], "expected a positive integer"),
    ],
)
def test_cli_rejects_bad_flags(synthetic_root, extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", str(synthetic_root), "--category", "synth_grid", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--patch-size", "16"], "--patch-size needs --patch"),
        (["--patch", "--patch-size", "64", "--image-size", "32"], "larger than --image-size"),
        (["--transfer"], "--transfer fine-tunes ImageNet weights"),
        (["--resume"], "no checkpoint at"),
        (
            ["--resume", "--overwrite"],
            "--resume continues OUT/checkpoint.pt and --overwrite starts over",
        ),
        (["--warmup-steps", "10"], "--warmup-steps needs --transfer"),
        (["--finetune-lr", "0.001", "--pretrained"], "--finetune-lr needs --transfer"),
        (
            ["--transfer", "--pretrained", "--steps", "100"],
            "--warmup-steps 2560 (the default) must be smaller than --steps 100",
        ),
        (["--category", "nope", "--image-size", "32"], "nope"),
    ],
)
def test_cli_reports_user_errors_in_one_line(synthetic_root, tmp_path, extra, message, capsys):
    argv = [
        "train",
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--out",
        str(tmp_path / "x"),
        "--device",
        "cpu",
        *extra,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("cutpaste train: error:")
    assert not (tmp_path / "x").exists()


def test_cli_transfer_flags_fill_in_the_papers_defaults(synthetic_root):
    parser, module = cli.command_parser("train")
    base = ["--data", str(synthetic_root), "--category", "synth_grid", "--pretrained"]
    config = module.build_config(parser.parse_args([*base, "--transfer"]))
    assert (config.protocol, config.warmup_steps, config.finetune_lr) == ("transfer", 2560, 1e-4)
    config = module.build_config(
        parser.parse_args([*base, "--transfer", "--warmup-steps", "7", "--finetune-lr", "0.002"])
    )
    assert (config.warmup_steps, config.finetune_lr) == (7, 0.002)
    scratch = module.build_config(parser.parse_args(base))  # stored as the library's defaults
    assert (scratch.protocol, scratch.warmup_steps, scratch.finetune_lr) == ("scratch", 2560, 1e-4)


def test_cli_every_training_flag_reaches_the_config(synthetic_root):
    parser, module = cli.command_parser("train")
    argv = [
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--variant",
        "scar",
        "--steps",
        "9",
        "--batch-size",
        "3",
        "--image-size",
        "96",
        "--patch",
        "--lr",
        "0.5",
        "--seed",
        "11",
        "--encoder",
        "shufflenet_v2_x0_5",
        "--device",
        "cpu",
        "--log-every",
        "2",
        "--checkpoint-every",
        "5",
        "--compile",
        "--deterministic",
        "--optimizer",
        "adamw",
        "--head-depth",
        "2",
        "--scar-reference",
        "128",
    ]
    config = module.build_config(parser.parse_args(argv))
    got = {
        k: getattr(config, k)
        for k in (
            "variant",
            "steps",
            "batch_size",
            "image_size",
            "patch_size",
            "lr",
            "seed",
            "encoder",
            "device",
            "log_every",
            "checkpoint_every",
            "compile",
            "deterministic",
            "optimizer",
            "head_depth",
            "scar_reference",
        )
    }
    assert got == {
        "variant": "scar",
        "steps": 9,
        "batch_size": 3,
        "image_size": 96,
        "patch_size": 64,
        "lr": 0.5,
        "seed": 11,
        "encoder": "shufflenet_v2_x0_5",
        "device": "cpu",
        "log_every": 2,
        "checkpoint_every": 5,
        "compile": True,
        "deterministic": True,
        "optimizer": "adamw",
        "head_depth": 2,
        "scar_reference": 128,
    }
    explicit = module.build_config(parser.parse_args([*argv, "--patch-size", "24"]))
    assert explicit.patch_size == 24
    default = module.build_config(
        parser.parse_args(["--data", str(synthetic_root), "--category", "synth_grid"])
    )
    assert (
        default.variant,
        default.steps,
        default.batch_size,
        default.image_size,
        default.lr,
        default.patch_size,
        default.optimizer,
        default.head_depth,
        default.scar_reference,
    ) == ("3way", 65_536, 32, 256, 0.03, None, "sgd", 8, 256)  # the paper's protocol


@pytest.mark.parametrize("overwrite", [False, True])
def test_cli_ctrl_c_saves_the_step_and_says_how_to_resume(
    synthetic_root, tmp_path, monkeypatch, capsys, sigint_default, overwrite
):
    out = tmp_path / "run"
    argv = cli_train_argv(synthetic_root, out, "--steps", "4", "--batch-size", "2")
    signal_during_step(monkeypatch, 2, signal.SIGINT)
    assert cli.main([*argv, "--overwrite"] if overwrite else argv) == 2
    err = capsys.readouterr().err
    how = "--resume instead of --overwrite" if overwrite else "--resume added"
    assert err == (
        f"cutpaste train: error: interrupted by SIGINT after step 2 of 4; checkpoint of "
        f"that step: {out / CHECKPOINT_NAME}; to continue, run the same command with "
        f"{how}\n"
    )
    assert read_checkpoint(out / CHECKPOINT_NAME)["step"] == 2
    monkeypatch.undo()
    assert cli.main([*argv, "--resume"]) == 0
    assert read_checkpoint(out / CHECKPOINT_NAME)["step"] == 4


def test_cli_weights_of_another_kind_are_named_in_one_short_line(synthetic_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_config(steps=1), tiny_cache(), out_dir=run_dir, progress=False)
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    text = tmp_path / "weights.txt"
    text.write_text("not weights\n")
    pickled = tmp_path / "module.pth"
    torch.save({"net": torch.nn.Linear(1, 1)}, pickled)
    cases = [
        (
            run_dir / CHECKPOINT_NAME,
            f"{run_dir / CHECKPOINT_NAME} is a cutpaste training checkpoint "
            "(has model/optimizer/config), not encoder weights: continue it with `cutpaste train "
            "--resume`",
        ),
        (
            resnet,
            f"weights file {resnet} does not fit shufflenet_v2_x0_5 (--encoder): 336 of "
            "its 338 keys missing (conv1.0.weight, conv1.1.weight, conv1.1.bias, ...), 120 unexpected "
            "(conv1.weight, bn1.weight, bn1.bias, ...)",
        ),
        (
            text,
            f"cannot read weights file {text}: not a PyTorch checkpoint/state dict (file is "
            "corrupt or of another kind)",
        ),
        (
            pickled,
            f"cannot read weights file {pickled}: it holds pickled Python objects "
            "(torch.nn.modules.linear.Linear), not a tensor-only file",
        ),
    ]
    for weights, message in cases:
        out = tmp_path / f"out-{weights.name}"
        argv = cli_train_argv(synthetic_root, out, "--steps", "1", "--weights", str(weights))
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cutpaste train: error: {message}"), err
        assert err.count("\n") == 1 and len(err) < 600 and "weights_only" not in err
        assert not out.exists()


@pytest.mark.gpu
def test_cuda_step_uses_bf16_autocast_and_matches_cpu_loss_scale():
    cache, config = tiny_cache(size=64), tiny_config(steps=3, image_size=64, device="cuda")
    result = train(config, cache, progress=False)
    assert all(math.isfinite(v) for v in result.history["loss"])
    assert result.history["loss"][0] == pytest.approx(math.log(3), rel=0.3)
    assert next(result.model.parameters()).is_cuda


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_training_step_never_waits_for_the_device(compiled):
    """The hot path (sample originals, augment, normalise, forward/backward/SGD) queues work
    without a single host-device sync, so the CPU prepares step t+1 while the GPU runs step t."""
    from cutpaste_lib.model import CutPasteModel

    config = tiny_config(
        encoder="resnet18", image_size=64, batch_size=4, device="cuda", compile=compiled
    )
    images = tiny_cache(size=64).images.cuda()
    model = CutPasteModel(**config.model_config()).cuda().to(memory_format=torch.channels_last)
    model_fn = compile_model(model, torch.device("cuda")) if compiled else model  # as train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)  # on the CPU, as train() draws its parameters
    compiler = ProxyCompiler.for_device("cuda") if compiled else None
    for _ in range(3):  # warm-up: cuDNN, allocator, compilation, CUDA-graph recording
        proxy_step(model_fn, optimizer, images, config, generator=g, compiler=compiler)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, correct = proxy_step(
            model_fn, optimizer, images, config, generator=g, compiler=compiler
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(float(loss)) and 0 <= int(correct) <= config.inputs_per_step


def test_optimization_step_learns_a_fixed_proxy_batch():
    # A sign error in the loss, labels that do not reach it or a step that never updates would all
    # leave the loss where it is; 30 SGD steps on one batch of 12 images must memorise it.
    from cutpaste_lib.model import CutPasteModel
    from cutpaste_lib.train import optimization_step

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = tiny_cache(n=6).images[:4].float() / 255
    batch = make_proxy_batch(images, "3way", generator=g)
    x = normalize(batch.images)
    model = CutPasteModel(
        encoder="shufflenet_v2_x0_5", num_classes=3, head_depth=1, head_width=16, embedding_dim=8
    ).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    losses = [
        float(optimization_step(model, opt, x, batch.labels, amp=False)[0]) for _ in range(30)
    ]
    assert losses[0] > 0.8  # about log 3 at the start
    assert losses[-1] < 0.5 * losses[0]


def test_a_compiled_config_without_its_compiler_is_refused():
    config = tiny_config(compile=True)
    images = tiny_cache().images
    with pytest.raises(ValueError, match="ProxyCompiler"):
        proxy_step(torch.nn.Identity(), None, images, config, generator=torch.Generator())


def test_checkpoints_by_wall_time_come_at_log_points_and_reset_on_save(tmp_path):
    from cutpaste_lib.train.checkpointer import Checkpointer

    now = [0.0]
    config = tiny_config(steps=100, log_every=5, checkpoint_every=50, checkpoint_minutes=2.0)
    ck = Checkpointer(tmp_path / "checkpoint.pt", config, tiny_cache(), clock=lambda: now[0])
    assert not ck.due(5, end=100, stopping=False)  # a log point, but no time has passed
    now[0] = 119.0
    assert not ck.due(10, end=100, stopping=False)  # 1 min 59 s
    now[0] = 120.0
    assert not ck.due(11, end=100, stopping=False)  # time is up, but not a log point
    assert ck.due(15, end=100, stopping=False)
    ck.last_saved = now[0]  # what save() does
    assert not ck.due(20, end=100, stopping=False)
    assert ck.due(50, end=100, stopping=False) and ck.due(100, end=100, stopping=False)
    assert ck.due(3, end=100, stopping=True)
    off = Checkpointer(tmp_path / "c.pt", tiny_config(checkpoint_minutes=0), tiny_cache())
    off.last_saved = -1e9
    assert not off.due(1, end=4, stopping=False)
    assert not Checkpointer(None, config, tiny_cache()).due(100, end=100, stopping=False)
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        tiny_config(checkpoint_minutes=-1)


def test_checkpoints_by_time_do_not_change_what_the_run_computes(tmp_path, monkeypatch):
    from cutpaste_lib.train import checkpointer

    saved, real = [], checkpointer.save_checkpoint

    def recording(path, **kw):
        saved.append((path.parent.name, kw["step"]))
        return real(path, **kw)

    monkeypatch.setattr(checkpointer, "save_checkpoint", recording)
    cache = tiny_cache()
    kw = dict(steps=4, log_every=2, checkpoint_every=100)
    by_time = train(
        tiny_config(**kw, checkpoint_minutes=1e-9), cache, out_dir=tmp_path / "t", progress=False
    )
    by_steps = train(
        tiny_config(**kw, checkpoint_minutes=0), cache, out_dir=tmp_path / "s", progress=False
    )
    assert saved == [("t", 2), ("t", 4), ("s", 4)]
    for key, value in by_steps.model.state_dict().items():
        assert torch.equal(value, by_time.model.state_dict()[key]), key
    assert by_time.history["loss"] == by_steps.history["loss"]
    assert by_time.history["step"] == by_steps.history["step"] == [2, 4]
