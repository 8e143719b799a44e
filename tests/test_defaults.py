"""The batch size and learning rate chosen when they are not given, and progressive resizing."""

import json
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from resnet_viz import ResNetConfig, build_model
from resnet_viz.cli import main
from resnet_viz.data import downscale, synthetic_dataset
from resnet_viz.training import Trainer, TrainSettings, load_resume
from resnet_viz.training.command import train_command
from resnet_viz.training.defaults import MIN_STEPS, SMALLEST_BATCH, budget_batch, choose, lr_for, plan

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_dataset(train_per_class=60, val_per_class=20)


def test_the_device_batch_and_the_square_root_learning_rate():
    assert (choose(None, None, CPU).batch_size, choose(None, None, CPU).lr) == (128, 0.2)
    assert (choose(None, None, CUDA).batch_size, choose(None, None, CUDA).lr) == (512, 0.4)
    assert lr_for(64) == pytest.approx(0.4 * math.sqrt(64 / 512), abs=1e-4)
    assert lr_for(2048) == pytest.approx(0.8)


def test_explicit_values_always_win():
    assert choose(256, 0.05, CPU, time_budget=10, images_per_s=1.0) == choose(256, 0.05, CPU)
    given_batch = choose(256, None, CPU, time_budget=10, images_per_s=1.0)
    assert (given_batch.batch_size, given_batch.lr) == (256, lr_for(256))
    given_lr = choose(None, 0.05, CPU, time_budget=60, images_per_s=10_000)
    assert given_lr.lr == 0.05 and "learning rate as given" in given_lr.why


@pytest.mark.parametrize(("rate", "budget"), [(300, 240), (700, 240), (5000, 240), (60_000, 40), (100, 5)])
def test_a_budget_halves_the_batch_until_it_buys_enough_steps(rate, budget):
    batch = budget_batch(128, rate, budget)
    steps = budget * rate / batch
    assert SMALLEST_BATCH <= batch <= 128 and 128 % batch == 0
    # the largest such batch: either it buys the steps and twice it would not, or it is the smallest
    assert (steps >= MIN_STEPS and (batch == 128 or steps / 2 < MIN_STEPS)) or batch == SMALLEST_BATCH


def test_the_batch_stays_a_multiple_of_the_processes():
    assert budget_batch(512, 100, 10, multiple=3) % 3 == 0
    assert choose(None, None, CPU, multiple=6).batch_size % 6 == 0


def test_the_plan_says_what_will_be_measured_before_the_run_starts():
    assert plan(None, None, CPU) == choose(None, None, CPU).describe()
    text = plan(None, None, CPU, time_budget=240)
    assert "batch 128" in text and f"at least {MIN_STEPS:,} steps" in text and "240 s" in text
    assert "measure" not in plan(64, None, CPU, time_budget=240)  # a given batch is not measured
    assert "measure" not in plan(None, None, CPU, time_budget=240, processes=2)


def test_a_budgeted_run_measures_its_speed_first_and_counts_it_in_the_budget(synthetic, tmp_path):
    trainer = Trainer(TINY, synthetic, TrainSettings(epochs=1000, time_budget=2.0), out_dir=tmp_path)
    assert trainer.measuring() and trainer.settings.batch_size == 128
    choice = trainer.choose()
    assert not trainer.measuring() and trainer.choose() is choice  # measured once
    assert "images/s" in choice.why and 0 < trainer.measured_seconds < 2.0
    assert (trainer.settings.batch_size, trainer.settings.lr) == (choice.batch_size, lr_for(choice.batch_size))
    seen = []
    result = trainer.run(on_progress=seen.append)
    assert result.settings.batch_size == choice.batch_size
    assert seen[0].elapsed >= trainer.measured_seconds  # the measurement is part of the budget
    assert 2.0 <= result.train_seconds < 4.0
    # the checkpoint holds the values chosen, so that a resumed run goes on with them
    saved = load_resume(tmp_path / "checkpoint.pt").settings
    assert (saved.batch_size, saved.lr) == (choice.batch_size, choice.lr)


def test_a_given_batch_is_not_measured(synthetic):
    trainer = Trainer(TINY, synthetic, TrainSettings(batch_size=32, time_budget=1.0))
    assert not trainer.measuring() and trainer.choose().batch_size == 32 and trainer.measured_seconds == 0


def test_the_cli_prints_the_choice_before_training(synthetic, tmp_path, capsys):
    assert main(["train", "resnet20", "--data", "synthetic", "--limit-per-class", "40", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "batch 128, peak learning rate 0.2 (128 suits the CPU" in err
    assert err.index("peak learning rate") < err.index("training")


def test_the_torchrun_command_leaves_out_what_each_process_chooses():
    command, _ = train_command(TINY, TrainSettings(), "cifar10", "runs/x", nproc_per_node=2)
    assert "--batch-size" not in command and "--lr" not in command and "--epochs 10" in command
    command, _ = train_command(TINY, TrainSettings(batch_size=256, lr=0.3), "cifar10", "runs/x")
    assert "--batch-size 256" in command and "--lr 0.3" in command


def test_downscale_matches_torchvision_antialiased_resize():
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    small = downscale(x)
    assert small.shape == (4, 3, 24, 24) and small.is_contiguous(memory_format=torch.channels_last)
    reference = TF.resize(x.contiguous(), [24, 24], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    torch.testing.assert_close(small, reference, atol=1e-5, rtol=1e-5)
    assert downscale(torch.rand(2, 3, 32, 32)).is_contiguous()


def test_low_resolution_steps_come_first_then_full_size(synthetic):
    sizes = []
    model = build_model(TINY)
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[-1]) if module.training else None)
    Trainer(TINY, synthetic, TrainSettings(epochs=4, batch_size=60, lr=0.1, low_res=0.5), model=model).run()
    assert sizes == [24] * 20 + [32] * 20  # 10 steps an epoch; the first half of the run at 3/4 of the side


def test_a_low_resolution_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="low-resolution share 1"):
        TrainSettings(low_res=1.0)


def test_a_run_saved_before_progressive_resizing_resumes_without_it(synthetic, tmp_path):
    Trainer(TINY, synthetic, TrainSettings(epochs=2, batch_size=60, lr=0.1, low_res=0.0), out_dir=tmp_path).run()
    path = tmp_path / "checkpoint.pt"
    data = torch.load(path, weights_only=True)
    run = json.loads(data["run"])
    del run["settings"]["low_res"]  # as a checkpoint written before the setting existed
    run["position"]["finished"] = False
    data["run"] = json.dumps(run)
    torch.save(data, path)
    assert load_resume(path).settings.low_res == 0.0
