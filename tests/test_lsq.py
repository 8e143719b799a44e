"""Learned step size quantization and PACT, against their papers' definitions: at most 2^b levels, LSQ's step
gradient against its formula and a finite-difference check, a step that moves when trained, PACT's clipping
gradient."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_viz.errors import ConfigError
from resnet_viz.quantization.lsq import LsqQuantizer, PactQuantizer, levels


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_a_weight_quantizer_gives_at_most_2_to_the_b_levels_per_channel(bits):
    torch.manual_seed(bits)
    w = torch.randn(6, 4, 3, 3) * torch.linspace(0.1, 2, 6).view(-1, 1, 1, 1)
    q = LsqQuantizer(bits, signed=True, channels=6)
    out = q(w)
    for c in range(6):
        values = torch.unique(out[c])
        assert len(values) <= 2**bits
        steps = values / q.step[c]
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)  # on the channel's grid
        codes = steps.round()
        assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize("bits", [2, 4])
def test_an_activation_quantizer_is_unsigned_with_2_to_the_b_levels(bits):
    x = torch.relu(torch.randn(8, 16, 5, 5)) * 3
    q = LsqQuantizer(bits, signed=False)
    out = q(x)
    assert len(torch.unique(out)) <= 2**bits and out.min() >= 0
    # the largest values are clipped to the top of the grid
    assert float(out.detach().max()) == pytest.approx(float(q.step.detach()) * (2**bits - 1))
    assert levels(bits, False) == (0, 2**bits - 1) and levels(bits, True) == (2 ** (bits - 1), 2 ** (bits - 1) - 1)


def test_lsq_initialises_its_step_as_the_paper_does():
    w = torch.randn(3, 8, 3, 3)
    q = LsqQuantizer(4, signed=True, channels=3, init="lsq")
    q(w)
    expected = 2 * w.abs().mean(dim=(1, 2, 3)) / math.sqrt(7)
    torch.testing.assert_close(q.step.detach(), expected)


@pytest.mark.parametrize(("bits", "signed"), [(4, True), (2, True), (3, False)])
def test_the_default_step_is_the_least_squared_rounding_error_of_its_candidates(bits, signed):
    """Each channel's step is the best of 100 evenly spaced up to the one whose grid just reaches its largest
    value, by a brute-force search in float64; and it rounds better than LSQ's own initial step."""
    torch.manual_seed(1)
    w = torch.randn(4, 6, 3, 3) * torch.tensor([0.1, 1.0, 3.0, 0.02]).view(-1, 1, 1, 1)
    w = w if signed else w.abs()
    qn, qp = levels(bits, signed)
    q = LsqQuantizer(bits, signed=signed, channels=4)
    q(w)

    def error(v: torch.Tensor, step: float) -> float:
        return float(((torch.clamp(torch.round(v / step), -qn, qp) * step - v) ** 2).sum())

    paper = LsqQuantizer(bits, signed=signed, channels=4, init="lsq")
    paper(w)
    for c in range(4):
        v = w[c].double()
        reach = max(float(v.max()) / qp, float(-v.min()) / qn if qn else 0.0)
        best = min((reach * k / 100 for k in range(1, 101)), key=lambda step: error(v, step))
        assert float(q.step[c].detach()) == pytest.approx(best, rel=1e-5)
        assert error(v, float(q.step[c].detach())) <= error(v, float(paper.step[c].detach()))


def test_an_unknown_initialisation_is_one_sentence():
    with pytest.raises(ConfigError, match="step initialisation 'max' is not one of mse, lsq"):
        LsqQuantizer(4, signed=True, init="max")


def test_the_step_gradient_is_lsqs_formula_and_a_finite_difference_of_its_surrogate():
    """LSQ's ∂v̂/∂s is -v/s + round(v/s) inside the range and -Qn or Qp outside, times g = 1/√(N·Qp). It is the
    derivative of the surrogate s · (clamp(v/s) + c) with the rounding offsets c held where they are, which a
    central finite difference measures."""
    torch.manual_seed(0)
    v = torch.randn(200) * 1.5
    weights = torch.randn(200)  # an upstream gradient
    q = LsqQuantizer(3, signed=True)
    q.initialise(v)
    (weights * q(v)).sum().backward()
    s = float(q.step.detach())
    qn, qp = 4, 3
    x = v / s
    local = torch.where(x <= -qn, torch.tensor(-qn, dtype=v.dtype),
                        torch.where(x >= qp, torch.tensor(qp, dtype=v.dtype), -x + x.round()))
    g = 1 / math.sqrt(200 * qp)
    formula = float((weights * local).sum()) * g
    assert float(q.step.grad) == pytest.approx(formula, rel=1e-5)
    offsets = (torch.clamp(x, -qn, qp).round() - torch.clamp(x, -qn, qp)).double()

    def surrogate(step: float) -> float:
        return float((weights.double() * step * (torch.clamp(v.double() / step, -qn, qp) + offsets)).sum())
    h = 1e-6
    assert float(q.step.grad) == pytest.approx((surrogate(s + h) - surrogate(s - h)) / (2 * h) * g, rel=1e-4)


def test_a_trained_step_moves_and_the_loss_falls():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
    target = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
    q = LsqQuantizer(2, signed=True, channels=4)
    x = torch.randn(32, 4, 8, 8)
    with torch.no_grad():
        y = target(x)
    optimiser = torch.optim.SGD([*conv.parameters(), *q.parameters()], lr=0.05)
    losses, first = [], None
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(torch.nn.functional.conv2d(x, q(conv.weight), padding=1), y)
        loss.backward()
        if first is None:
            first = q.step.detach().clone()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert not torch.allclose(q.step.detach(), first)  # the step is a parameter, and it moved
    assert losses[-1] < 0.7 * losses[0]
    assert any(p is q.step for p in q.parameters())


def test_pact_clips_at_a_learned_alpha_whose_gradient_is_the_clipped_share():
    x = torch.linspace(-1, 5, 601)
    q = PactQuantizer(4, alpha=3.0)
    out = q(x)
    assert out.min() == 0 and float(out.detach().max()) == pytest.approx(3.0)
    assert len(torch.unique(out)) <= 16
    out.sum().backward()
    assert float(q.alpha.grad) == pytest.approx(float((x >= 3.0).sum()))


def test_bad_bit_widths_are_refused():
    with pytest.raises(ConfigError, match="2 to 16 bits"):
        LsqQuantizer(1, signed=True)


def test_a_learned_fine_tune_trains_the_steps_and_reports_every_layers_bits():
    from resnet_viz.config import PRESETS
    from resnet_viz.data import synthetic_dataset
    from resnet_viz.model import build_model
    from resnet_viz.quantization.qat import learned_finetune

    torch.manual_seed(0)
    config = PRESETS["resnet20"]
    model = build_model(config)
    data = synthetic_dataset(train_per_class=16, val_per_class=4)
    found = learned_finetune(model, config, data, torch.device("cpu"), bits=3, epochs=1, batch_size=32)
    assert found["layer_bits"]["conv1"] == 8 and found["layer_bits"]["fc"] == 8
    assert found["layer_bits"]["layer2.1.conv2"] == 3
    tuned = found["model"]
    first = tuned.layer2[1].conv2.parametrizations.weight[0]
    assert first.bits == 3 and bool(first.initialised)
    steps = {n: p for n, p in tuned.named_parameters() if n.endswith("step")}
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(found["layer_bits"]) == convs + 1
    assert len(steps) == 2 * (convs + 1)  # a weight step and an input step for each conv and the fc
    assert 0 <= found["before"] <= 1 and 0 <= found["after"] <= 1 and 0 <= found["after_flip"] <= 1
    with torch.no_grad():  # as quantized: every 3-bit layer's weights have at most 8 levels per channel
        w = tuned.layer2[1].conv2.weight
        assert all(len(torch.unique(w[c])) <= 8 for c in range(w.shape[0]))


def test_a_step_pushed_through_zero_is_kept_positive():
    """At 2 bits an SGD update can push a channel's step below zero, which flips its grid; the quantizer clamps it
    to a tiny positive step at its next forward pass, as torch.ao's learnable fake quantize clamps its scale."""
    q = LsqQuantizer(2, signed=True, channels=3)
    w = torch.randn(3, 4)
    q(w)
    with torch.no_grad():
        q.step[1] = -0.5
    out = q(w)
    assert bool((q.step > 0).all()) and float(q.step.detach()[1]) == pytest.approx(torch.finfo(torch.float32).eps)
    assert out[1].abs().max() < 1e-5  # that channel rounds to (almost) nothing, rather than to a flipped grid
    pact = PactQuantizer(2, alpha=1.0)
    with torch.no_grad():
        pact.alpha.fill_(-1.0)
    pact(torch.rand(10))
    assert float(pact.alpha.detach()) > 0
