"""One process's side of distributed training: the shards, the global batches, resuming, the torchrun command.
The runs with several processes are in tests/distributed."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
import torch

from resnet_viz import ConfigError, build_model, preset
from resnet_viz.cli import build_parser
from resnet_viz.cli.arguments import config_from_args
from resnet_viz.cli.train import run_setup as _run_setup
from resnet_viz.data import DataError, DeviceBatches, Split, synthetic_dataset
from resnet_viz.errors import CheckpointError
from resnet_viz.training import Trainer, TrainSettings, checkpoint_bytes, load_checkpoint, load_resume
from resnet_viz.training.command import arch_arguments, train_command
from resnet_viz.training.distributed import World
from tests.distributed.worker import TINY


def _batches(n: int = 103) -> DeviceBatches:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    return DeviceBatches(Split(images, torch.arange(n)), "cpu", (0.0,) * 3, (1.0,) * 3)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_shards_cover_each_image_once_per_epoch(world):
    batches, batch_size = _batches(), 12
    for epoch in (1, 2):
        shards = [batches.shard_indices(batch_size, seed=5, epoch=epoch, rank=r, world=world) for r in range(world)]
        seen = torch.cat([s.flatten() for s in shards])
        assert len(seen) == (103 // 12) * 12 and len(set(seen.tolist())) == len(seen)  # each at most once
        # global batch k is the ranks' k-th rows together, the same as one process's k-th batch
        together = torch.cat(shards, dim=1)
        assert torch.equal(together, batches.shard_indices(batch_size, seed=5, epoch=epoch))
    assert not torch.equal(batches.shard_indices(12, seed=5, epoch=1), batches.shard_indices(12, seed=5, epoch=2))


def test_a_global_batch_is_the_same_images_crops_and_flips_for_any_number_of_processes():
    data = synthetic_dataset(train_per_class=20, val_per_class=2)
    batches = DeviceBatches(data.train, "cpu", data.mean, data.std)
    one = list(batches.global_batches(40, seed=1, epoch=3))
    for world in (2, 4):
        parts = [list(batches.global_batches(40, seed=1, epoch=3, rank=r, world=world)) for r in range(world)]
        for k, (x, y) in enumerate(one):
            assert torch.equal(torch.cat([p[k][0] for p in parts]), x)
            assert torch.equal(torch.cat([p[k][1] for p in parts]), y)
    # starting at batch 3 gives what an uninterrupted epoch gives from there on
    later = list(batches.global_batches(40, seed=1, epoch=3, start=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(later, one[3:], strict=True))


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(DataError, match="does not split evenly over 3 processes"):
        _batches().shard_indices(16, seed=0, epoch=1, rank=0, world=3)
    data = synthetic_dataset(train_per_class=20, val_per_class=2)
    world = World(rank=0, size=2, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="does not split evenly into 2 processes × 3 micro-batches: use a "
                                          "multiple of 6"):
        Trainer(TINY, data, TrainSettings(batch_size=63, micro_batches=3), world=world)
    with pytest.raises(ConfigError, match="the batch size 64 does not split into 3 micro-batches"):
        TrainSettings(batch_size=64, micro_batches=3)
    with pytest.raises(ConfigError, match="micro-batches 0"):
        TrainSettings(micro_batches=0)


def test_sync_batch_norm_on_cpu_processes_is_one_sentence():
    data = synthetic_dataset(train_per_class=20, val_per_class=2)
    world = World(rank=0, size=2, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on GPUs only"):
        Trainer(TINY, data, TrainSettings(batch_size=64, sync_bn=True), world=world)


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch():
    """K micro-batches give the mean of the K halves' gradients, each half with its own BatchNorm statistics:
    what K processes compute together."""
    data = synthetic_dataset(train_per_class=20, val_per_class=2)
    grads = {}

    def keep(name):
        def hook(step, model):
            if step == 1:
                grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
        return hook

    settings = TrainSettings(epochs=1, batch_size=64, precision="fp32", micro_batches=2, low_res=0)
    Trainer(TINY, data, settings).run(on_backward=keep("accumulated"))
    batches = DeviceBatches(data.train, "cpu", data.mean, data.std, channels_last=True)
    x, y = next(batches.global_batches(64, seed=0, epoch=1))
    torch.manual_seed(0)
    model = build_model(TINY).to(memory_format=torch.channels_last).train()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    for half in (slice(0, 32), slice(32, 64)):
        (loss_fn(model(x[half]), y[half]) / 2).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads["accumulated"][name], p.grad, rtol=1e-5, atol=1e-7)


# -- resuming -------------------------------------------------------------------------------------------------


def _same_run(a, b) -> None:
    keys = ("epoch", "step", "lr", "train_loss", "train_acc", "val_acc")
    assert [{k: r[k] for k in keys} for r in a.history] == [{k: r[k] for k in keys} for r in b.history]
    assert (a.steps, a.val_acc, a.val_acc_flip, a.per_class) == (b.steps, b.val_acc, b.val_acc_flip, b.per_class)


def test_stopping_and_resuming_gives_the_uninterrupted_run(tmp_path):
    data = synthetic_dataset(train_per_class=40, val_per_class=10)
    settings = TrainSettings(epochs=3, batch_size=40, lr=0.1, precision="fp32")
    whole = Trainer(TINY, data, settings).run()
    first = Trainer(TINY, data, settings, out_dir=tmp_path)

    def stop_midway(p):
        if p.step == 14:  # in the second epoch (10 steps each)
            first.stop()

    stopped = first.run(on_progress=stop_midway)
    assert (stopped.stopped, stopped.steps) == ("stop request", 14)
    resume = load_resume(tmp_path / "checkpoint.pt")
    assert (resume.position.step, resume.position.epoch, resume.position.batch) == (14, 2, 4)
    assert len(resume.position.history) == 1  # the first epoch, whole; the second goes on where it stopped
    resumed = Trainer(TINY, data, resume.settings, out_dir=tmp_path, resume=resume).run()
    _same_run(resumed, whole)
    assert resumed.stopped == "finished" and resumed.train_seconds >= stopped.train_seconds


def test_a_run_saves_a_checkpoint_to_resume_from_after_every_epoch(tmp_path):
    data = synthetic_dataset(train_per_class=40, val_per_class=10)
    settings = TrainSettings(epochs=3, batch_size=40, lr=0.1, precision="fp32")
    seen = []

    def on_progress(p):
        if p.step in (11, 21):  # the first step of epochs 2 and 3
            seen.append(load_resume(tmp_path / "checkpoint.pt").position)

    Trainer(TINY, data, settings, out_dir=tmp_path).run(on_progress=on_progress)
    assert [(p.step, p.epoch, p.batch, len(p.history)) for p in seen] == [(10, 2, 0, 1), (20, 3, 0, 2)]
    model, config, meta = load_checkpoint(tmp_path / "checkpoint.pt")
    assert config == TINY and meta["stopped"] == "finished"


def test_resuming_refuses_what_would_change_the_run(tmp_path):
    data = synthetic_dataset(train_per_class=40, val_per_class=10)
    settings = TrainSettings(epochs=2, batch_size=40, lr=0.1, precision="fp32")
    trainer = Trainer(TINY, data, settings, out_dir=tmp_path)
    trainer.run(on_progress=lambda p: p.step == 3 and trainer.stop())
    resume = load_resume(tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="a resumed run keeps its epochs"):
        resume.settings_with(epochs=5)
    with pytest.raises(ConfigError, match="a resumed run keeps its lr"):
        Trainer(TINY, data, dataclasses.replace(settings, lr=0.2), resume=resume)
    with pytest.raises(ConfigError, match="not the one in the checkpoint"):
        Trainer(dataclasses.replace(TINY, shortcut="A"), data, settings, resume=resume)
    other = synthetic_dataset(train_per_class=30, val_per_class=10)
    with pytest.raises(ConfigError, match="with 400 training images, but this data .* with 300"):
        Trainer(TINY, other, settings, resume=resume)
    Trainer(TINY, data, settings, out_dir=tmp_path, resume=resume).run()
    with pytest.raises(ConfigError, match="has already finished"):
        Trainer(TINY, data, settings, resume=load_resume(tmp_path / "checkpoint.pt"))


def test_a_checkpoint_without_a_run_cannot_be_resumed(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(checkpoint_bytes(build_model(TINY), TINY, {"mean": [0] * 3, "std": [1] * 3}))
    with pytest.raises(CheckpointError, match="not a run to resume"):
        load_resume(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable resnet-viz checkpoint"):
        load_resume(path)


def test_the_cli_resume_refuses_settings_that_define_the_run(tmp_path):
    args = build_parser().parse_args(["train", "--resume", "x.pt", "--epochs", "5", "--data", "synthetic",
                                      "--out", str(tmp_path)])
    with pytest.raises(Exception, match="leave out --epochs"):
        _run_setup(args)
    args = build_parser().parse_args(["train", "--data", "synthetic", "--out", str(tmp_path)])
    with pytest.raises(Exception, match="give ARCH"):
        _run_setup(args)


# -- the command for a cluster ------------------------------------------------------------------------------


@pytest.mark.parametrize("config, expected", [
    (preset("resnet20"), ["resnet20"]),
    (preset("resnet56", shortcut="C", num_classes=100), ["resnet56", "--shortcut", "C", "--classes", "100"]),
    (preset("resnet18", in_channels=1, input_size=(64, 64)), ["resnet18", "--input", "1x64x64"]),
    (dataclasses.replace(preset("resnet20"), widths=(16, 32, 48)), ["resnet20.json"]),
])
def test_the_arch_arguments_name_the_config(config, expected):
    arguments, needs_file = arch_arguments(config)
    assert arguments == expected and needs_file == expected[0].endswith(".json")


@pytest.mark.parametrize("nproc, nnodes", [(1, 1), (4, 1), (8, 2)])
def test_the_torchrun_command_parses_back_to_the_same_run(nproc, nnodes, tmp_path):
    config = preset("resnet56", shortcut="B", num_classes=100)
    settings = TrainSettings(epochs=30, batch_size=1024, lr=0.8, schedule="cosine", time_budget=600,
                             micro_batches=2, compile=True, sync_bn=True, seed=7)
    command, needs_file = train_command(config, settings, "cifar100", "runs/r56", nproc_per_node=nproc,
                                        nnodes=nnodes, endpoint="node0:29500", limit_per_class=100)
    words = shlex.split(command)
    if nproc * nnodes == 1:
        assert words[:3] == ["python", "-m", "resnet_viz"]
    else:
        assert words[0] == "torchrun" and f"--nproc_per_node={nproc}" in words
        assert ("--standalone" in words) == (nnodes == 1)
        assert (f"--nnodes={nnodes}" in words and "--rdzv_endpoint=node0:29500" in words) == (nnodes > 1)
    args = build_parser().parse_args(words[words.index("resnet_viz") + 1:])
    assert not needs_file and config_from_args(args) == config
    parsed_config, parsed, _ = _run_setup(args)
    expected = dataclasses.replace(settings, sync_bn=settings.sync_bn and nproc * nnodes > 1)
    assert parsed_config == config and parsed == expected
    assert (args.data, args.out, args.limit_per_class) == ("cifar100", "runs/r56", 100)


def test_the_command_for_several_machines_needs_sensible_numbers():
    with pytest.raises(ConfigError, match="1 or more"):
        train_command(TINY, TrainSettings(), "cifar10", "out", nproc_per_node=0)
