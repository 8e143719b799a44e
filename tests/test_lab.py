"""The Lab's studies, each checked against a definition or an independent computation: the lesion study against
``evaluate`` and against a network rebuilt with the block bypassed, the effective receptive field against the
trace's receptive fields, the loss landscape against the unchanged network's loss and the paper's filter
normalisation, the layer responses against the layers run by hand, and the gradients against their seed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_viz.config import PRESETS
from resnet_viz.data import DeviceBatches, synthetic_dataset
from resnet_viz.errors import ConfigError
from resnet_viz.lab import STUDIES, LabSettings, run_study
from resnet_viz.lab.charts import figures
from resnet_viz.lab.curves import curve_rows
from resnet_viz.lab.erf import effective_fields
from resnet_viz.lab.gradients import init_gradients
from resnet_viz.lab.landscape import Walker, direction, loss_landscape
from resnet_viz.lab.lesion import Bypass, Lesion, blocks_of, lesion_study, why_not_removable
from resnet_viz.lab.networks import inference_copy, study_images
from resnet_viz.lab.responses import layer_responses, three_by_three
from resnet_viz.model import build_model
from resnet_viz.training import evaluate, load_checkpoint


def warmed(name: str, seed: int = 0, size: int = 32) -> torch.nn.Module:
    """A freshly built network whose BN running statistics have seen a few random batches (so eval mode is not the
    identity)."""
    torch.manual_seed(seed)
    model = build_model(PRESETS[name])
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size))
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(train_per_class=20, val_per_class=12)


def normalised(data, split="val"):
    part = getattr(data, split)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (part.images.float() / 255 - mean) / std, part.labels


# -- lesion ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "preresnet20"])
def test_removing_an_identity_blocks_branch_gives_its_input(name):
    model = warmed(name)
    x = torch.relu(torch.randn(4, 16, 32, 32)) if name == "resnet20" else torch.randn(4, 16, 32, 32)
    block = model.layer1[1]  # an identity block: 16 → 16 channels, stride 1
    assert why_not_removable(block) is None
    assert torch.equal(Bypass(block)(x), x)


def test_removing_a_downsampling_blocks_branch_gives_its_shortcut():
    model = warmed("cifar-resnet18")  # projection shortcuts
    block = model.layer2[0]
    x = torch.relu(torch.randn(2, 64, 16, 16))
    with torch.no_grad():
        assert torch.allclose(Bypass(block)(x), torch.relu(block.downsample(x)))


def test_a_plain_block_that_changes_shape_cannot_be_removed_and_one_that_keeps_it_becomes_the_identity():
    model = warmed("plain20")
    assert "changes the shape" in why_not_removable(model.layer2[0])
    assert why_not_removable(model.layer2[1]) is None
    x = torch.relu(torch.randn(2, 32, 16, 16))
    assert torch.equal(Bypass(model.layer2[1])(x), x)


def test_lesion_with_nothing_removed_equals_evaluate(data):
    model = warmed("resnet20")
    x, y = normalised(data)
    found = lesion_study(model, x, y, draws=1, batch_size=50)
    batches = DeviceBatches(data.val, "cpu", data.mean, data.std)
    accuracy, _ = evaluate(model, batches, 10, precision="fp32")
    assert found["baseline"] == accuracy
    assert found["images"] == len(data.val)


def test_every_lesion_equals_the_network_rebuilt_without_those_branches():
    """The study walks the lesions as a tree, sharing what they have in common, on a copy with its batch norms
    folded; a whole forward through the original network with the removed blocks swapped for their bypasses must
    get the same images right. On the shipped ResNet-20 and the sample images, so that lesions matter."""
    model, _, meta = load_checkpoint("bundled:resnet20")
    images, labels, _ = study_images(None, 100)
    mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x = (images.float() / 255 - mean) / std
    found = lesion_study(model, x, labels, draws=2, seed=3, batch_size=30)
    names = [name for name, _ in blocks_of(model)]

    def rebuilt(removed: list[str]) -> float:
        copy_ = copy.deepcopy(model)
        for name in removed:
            stage, index = name.split(".")
            getattr(copy_, stage)[int(index)] = Bypass(getattr(copy_, stage)[int(index)])
        with torch.no_grad():
            return int((copy_(x).argmax(1) == labels).sum()) / len(labels)

    assert found["baseline"] == rebuilt([]) == 0.88
    for row in found["single"]:
        assert row["accuracy"] == rebuilt([row["block"]]), row["block"]
    for k in found["random"][1:]:
        for accuracy, removed in zip(k["accuracy"], k["removed"]):
            assert accuracy == rebuilt(removed), removed
    assert len({row["accuracy"] for row in found["single"]}) > 3  # the lesions do differ
    assert [r["block"] for r in found["single"]] == names


def test_lesion_json_names_blocks_and_random_draws(data):
    model = warmed("resnet20")
    x, y = normalised(data)
    found = lesion_study(model, x, y, draws=3, seed=5)
    assert [r["block"] for r in found["single"]] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert [k["k"] for k in found["random"]] == list(range(1, 10))
    assert [len(k["accuracy"]) for k in found["random"]] == [3] * 8 + [1]  # k = 9: the one set of all nine
    assert all(0 <= a <= 1 for k in found["random"] for a in k["accuracy"])
    assert found["random"][-1]["removed"] == [[r["block"] for r in found["single"]]]
    again = lesion_study(model, x, y, draws=3, seed=5)
    assert again == found  # the same draws from the same seed
    json.dumps(found)


def test_a_plain_networks_lesion_skips_the_blocks_that_change_shape(data):
    model = warmed("plain20")
    x, y = normalised(data)
    found = lesion_study(model, x, y, draws=1)
    unremovable = [r["block"] for r in found["single"] if not r["removable"]]
    assert unremovable == ["layer2.0", "layer3.0"]
    assert all(r["accuracy"] is None for r in found["single"] if not r["removable"])
    assert [k["k"] for k in found["random"]] == list(range(1, 8))
    assert Lesion.of(model).model is not model  # the caller's network is never changed


@pytest.mark.parametrize("name", ["resnet20", "preresnet20", "cifar-resnet18", "plain20"])
def test_the_inference_copy_folds_batch_norms_and_computes_the_same(name):
    model = warmed(name)
    fast = inference_copy(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert left == (10 if name == "preresnet20" else 0)  # a pre-activation block's input BN has no conv before it
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


# -- effective receptive field ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size", [("resnet20", 96), ("plain20", 96), ("preresnet20", 96),
                                       ("cifar-resnet50", 48), ("resnet18", 64)])
def test_the_erf_gradient_is_zero_outside_the_theoretical_field_and_not_at_its_centre(name, size):
    model = warmed(name, size=size)
    torch.manual_seed(2)
    fields = effective_fields(model, torch.randn(4, 3, size, size))
    assert [f.stage for f in fields] == ["stem", *[f"layer{i}" for i in range(1, len(model.stages) + 1)]]
    for field in fields:
        top, left, bottom, right = field.box()
        outside = field.gradient.copy()
        outside[top:bottom + 1, left:right + 1] = 0
        assert not outside.any(), f"{field.stage}: gradient outside the theoretical receptive field"
        assert field.gradient[field.centre] > 0
        side = field.theoretical[0]
        if side <= size and top > 0 and left > 0:  # the field lies inside the image: its edge is reached too
            assert field.gradient[top, left:right + 1].any() and field.gradient[top:bottom + 1, left].any()
            assert bottom - top + 1 == side


def test_erf_mass_sides_grow_and_fit_the_image(data):
    model = warmed("resnet20")
    fields = effective_fields(model, normalised(data)[0][:16])
    sides = [f.mass_side(0.5) for f in fields]
    assert sides == sorted(sides) and sides[0] >= 1
    for f in fields:
        assert f.mass_side(0.5) <= f.mass_side(0.9) <= 2 * 32 - 1


# -- loss landscape ----------------------------------------------------------------------------------------

def test_every_direction_filter_has_its_weight_filters_norm_and_biases_and_bn_get_none():
    model = warmed("resnet20")
    d = direction(model, torch.Generator().manual_seed(0))
    for name, weight in model.named_parameters():
        if weight.dim() <= 1:
            assert not d[name].any(), name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1))


def test_the_landscape_at_the_origin_is_the_unchanged_networks_loss(data):
    model = warmed("resnet20")
    x, y = normalised(data, "train")
    x, y = x[:64], y[:64]
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    found = loss_landscape(model, x, y, span=0.5, steps=3, line_steps=3)
    assert found["origin_loss"] == pytest.approx(expected, rel=1e-5)
    assert found["line"]["loss"][1] == pytest.approx(expected, rel=1e-5)
    assert found["surface"]["loss"][1][1] == pytest.approx(expected, rel=1e-5)
    assert found["line"]["loss"][0] != pytest.approx(expected, rel=1e-3)  # a step away, the loss changes
    walker = Walker(model, x, y)
    walker.move([(0.3, direction(walker.model, torch.Generator().manual_seed(1)))])
    walker.move([])
    assert all(torch.equal(p, model.state_dict()[n]) for n, p in walker.model.named_parameters())


def test_the_line_shares_the_surfaces_middle_row(data):
    model = warmed("plain20")
    x, y = normalised(data, "train")
    found = loss_landscape(model, x[:16], y[:16], span=1.0, steps=5, line_steps=5)
    assert found["points"] == 25  # the line costs nothing more
    assert found["line"]["loss"] == found["surface"]["loss"][2]
    finer = loss_landscape(model, x[:16], y[:16], span=1.0, steps=5, line_steps=9)
    assert finer["points"] == 29 and finer["line"]["loss"][::2] == found["line"]["loss"]


def test_landscape_settings_are_checked():
    model = warmed("resnet20")
    with pytest.raises(ConfigError, match="steps"):
        loss_landscape(model, torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long), steps=1000)


# -- layer responses ---------------------------------------------------------------------------------------

def test_responses_are_the_std_of_each_3x3_convs_bn_output(data):
    model = warmed("resnet20")
    x = normalised(data)[0][:40]
    rows = layer_responses(model, x, batch_size=16)
    assert len(rows) == 19  # the stem and two per block: every 3×3 conv of ResNet-20
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        first = model.layer1[0].bn1(model.layer1[0].conv1(torch.relu(stem)))
    assert rows[0]["std"] == pytest.approx(float(stem.double().std(unbiased=False)), rel=1e-5)
    assert rows[1]["read_at"] == "layer1.0.bn1"
    assert rows[1]["std"] == pytest.approx(float(first.double().std(unbiased=False)), rel=1e-5)


def test_a_preactivation_blocks_last_conv_is_read_before_the_addition():
    found = dict(three_by_three(warmed("preresnet20")))
    names = {id(m): n for n, m in warmed("preresnet20").named_modules()}
    assert {n: type(m).__name__ for n, m in found.items()}["layer1.0.conv1"] == "BatchNorm2d"
    assert type(found["layer1.0.conv2"]).__name__ == "Conv2d"  # nothing normalises it before the addition
    assert names  # the module names exist


# -- gradients at initialisation ---------------------------------------------------------------------------

def test_gradients_at_initialisation_come_from_the_seed_and_leave_the_callers_random_state():
    state = torch.random.get_rng_state()
    first = init_gradients(PRESETS["resnet20"], seed=3, batch_size=8)
    assert torch.equal(state, torch.random.get_rng_state())
    assert init_gradients(PRESETS["resnet20"], seed=3, batch_size=8) == first
    assert init_gradients(PRESETS["resnet20"], seed=4, batch_size=8) != first
    assert [r["layer"] for r in first][:2] == ["conv1", "layer1.0.conv1"] and first[-1]["layer"] == "fc"
    assert [r["depth"] for r in first if r["kind"] != "shortcut"] == list(range(1, 21))


def test_gradients_match_autograd_on_the_same_network():
    rows = init_gradients(PRESETS["plain20"], seed=0, batch_size=4)
    from resnet_viz.lab.gradients import seeded_model
    model = seeded_model(PRESETS["plain20"], 0).train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((4, 3, 32, 32), generator=generator)
    y = torch.randint(0, 10, (4,), generator=generator)
    F.cross_entropy(model(x), y).backward()
    assert rows[0]["grad_norm"] == pytest.approx(float(model.conv1.weight.grad.norm()), rel=1e-5)


# -- the studies as a whole ------------------------------------------------------------------------------

def test_every_study_runs_and_draws(data, tmp_path):
    settings = LabSettings(images=20, draws=1, steps=3, line_steps=3, batch_size=4)
    sources = {"gradients": ["resnet20", "plain20"], "curves": ["bundled:resnet20"]}
    for name in STUDIES:
        report = run_study(name, sources.get(name, ["bundled:resnet20"]), data, settings)
        assert report.rows() and report.summary_lines() and figures(report)
        json.dumps(report.to_json())


def test_curves_read_a_run_folder_and_refuse_a_broken_one(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {"name": "plain20", "shortcut": "none"}, "history": [
        {"epoch": 1, "train_acc": 0.4, "val_acc": 0.5}, {"epoch": 2, "train_acc": 0.6, "val_acc": 0.55}]}))
    rows, residual = curve_rows([str(run)])
    assert residual == {"run/plain20": False}
    assert [r["train_error"] for r in rows] == pytest.approx([0.6, 0.4])
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not the metrics.json"):
        curve_rows([str(run)])
    with pytest.raises(ConfigError, match="no training record"):
        curve_rows([str(tmp_path / "nowhere")])


def test_a_study_that_needs_data_says_so():
    with pytest.raises(ConfigError, match="needs data"):
        run_study("lesion", ["bundled:resnet20"])
    with pytest.raises(ConfigError, match="not one of"):
        run_study("nonsense", [])
    assert np.isfinite(run_study("responses", ["bundled:resnet20"], settings=LabSettings(images=8)).rows()[0]["std"])


# -- the command line --------------------------------------------------------------------------------------

def test_study_command_writes_the_lesion_json_other_tools_read(tmp_path, capsys):
    from resnet_viz.cli import main

    out = tmp_path / "lesion"
    assert main(["study", "lesion", "bundled:resnet20", "--data", "synthetic", "--limit-per-class", "10",
                 "--images", "40", "--draws", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Lesion study (Veit et al. 2016) on 20 images of synthetic (random) data" in printed  # 2 a class
    found = json.loads((out / "lesion-resnet20.json").read_text())
    assert set(found) >= {"baseline", "single", "random"}
    assert found["single"][0]["block"] == "layer1.0" and 0 <= found["single"][0]["accuracy"] <= 1
    assert found["random"][0]["k"] == 1 and isinstance(found["random"][0]["accuracy"], list)
    assert {p.name for p in out.iterdir()} >= {"lesion.json", "lesion.csv", "lesion.html", "lesion-resnet20.dot"}
    assert json.loads((out / "lesion.json").read_text())["results"]["resnet20"] == found


def test_study_command_errors_are_one_sentence(tmp_path, capsys):
    from resnet_viz.cli import main

    assert main(["study", "lesion", "bundled:resnet20"]) == 2
    assert capsys.readouterr().err.strip() == "error: the lesion study needs data: give a dataset (--data)"
    assert main(["study", "erf"]) == 2
    assert "name what to study" in capsys.readouterr().err
    assert main(["study", "erf", "bundled:nothing"]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main(["study", "degradation", "--data", "synthetic"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["study", "degradation", "--data", "synthetic", "--depths", "21", "--out", str(tmp_path)]) == 2
    assert "depths 21" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_degradation_trains_plain_and_residual_with_one_recipe_and_draws_their_curves(tmp_path, capsys):
    from resnet_viz.cli import main

    assert main(["study", "degradation", "--data", "synthetic", "--limit-per-class", "8", "--depths", "20",
                 "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "training plain20, resnet20 for 1 epochs each" in captured.err and "in all on this device" in captured.err
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves["networks"] == ["plain20", "resnet20"]
    assert curves["residual"] == {"plain20": False, "resnet20": True}
    settings = [json.loads((tmp_path / n / "metrics.json").read_text())["settings"] for n in ("plain20", "resnet20")]
    assert settings[0] == settings[1]  # one recipe
