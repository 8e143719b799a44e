import os
import re
from pathlib import Path

import pytest
import torch

from resnet_viz import build_model, preset, trace
from resnet_viz.views.diagram import block_diagram
from resnet_viz.views.graph import computational_graph
from resnet_viz.views.structure import layer_label

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"  # regenerate on purpose: UPDATE_GOLDEN=1 pytest tests/test_diagram.py


def _edges(dot: str) -> list[tuple[str, str, str]]:
    """(tail, head, label) of every edge in DOT text."""
    found = []
    for line in dot.splitlines():
        m = re.match(r'\s*("?[^"\s]+"?) -> ("?[^"\s]+"?)(?: \[(.*)\])?$', line)
        if m:
            label = re.search(r'\bx?label=(?:"([^"]*)"|([^\s"\]]+))', m.group(3) or "")  # xlabel on crossing edges
            text = (label.group(1) or label.group(2)) if label else ""
            found.append((m.group(1).strip('"'), m.group(2).strip('"'), text))
    return found


def _labels(dot: str) -> list[str]:
    return re.findall(r'\[label="([^"]*)"', dot)


@pytest.mark.parametrize("level", ["stage", "block", "layer"])
def test_golden_dot_for_resnet20(level):
    dot = block_diagram(trace(preset("resnet20")), level).source
    path = GOLDEN / f"resnet20-{level}.dot"
    if UPDATE:
        path.write_text(dot)
    assert dot == path.read_text(), f"{path.name} changed: if on purpose, rerun with UPDATE_GOLDEN=1"


def test_stage_diagram_is_the_seed_walkthrough_with_shapes_on_every_edge():
    dot = block_diagram(trace(preset("resnet20")), "stage", legend=False).source
    edges = _edges(dot)
    assert [(a, b) for a, b, _ in edges] == [("input", "stem"), ("stem", "layer1"), ("layer1", "layer2"),
                                             ("layer2", "layer3"), ("layer3", "avgpool"), ("avgpool", "fc"),
                                             ("fc", "output")]
    assert [label for *_, label in edges] == ["(3,32,32)", "(16,32,32)", "(16,32,32)", "(32,16,16)", "(64,8,8)",
                                              "(64,1,1)", "(10)"]
    labels = _labels(dot)
    assert "stage 1 (layer1)\\n3 × basic block, 16 ch" in labels
    assert "stage 2 (layer2)\\n3 × basic block, 32 ch, /2" in labels
    assert "avg pool 8×8" in labels and "fc 64→10" in labels


def test_imagenet_stem_in_the_studys_words():
    t = trace(preset("resnet50"))
    assert layer_label(t["conv1"]) == "conv 7×7, 64, /2"
    assert layer_label(t["maxpool"]) == "max pool 3×3, /2"
    assert layer_label(t["layer2.0.conv2"]) == "conv 3×3, 128, /2"
    assert layer_label(t["avgpool"]) == "avg pool 7×7"
    assert layer_label(t["fc"]) == "fc 2048→1000"
    stage = block_diagram(t, "stage").source
    assert "stage 1 (layer1)\\n3 × bottleneck block, 256 ch" in stage


@pytest.mark.parametrize(("shortcut", "skips"), [
    ("A", ["identity"] * 7 + ["zero-pad subsample /2, +16 ch", "zero-pad subsample /2, +32 ch"]),
    ("B", ["identity"] * 7 + ["1×1 conv, 32, /2 + BN", "1×1 conv, 64, /2 + BN"]),
    ("C", ["1×1 conv, 16 + BN"] * 3 + ["1×1 conv, 32, /2 + BN"] + ["1×1 conv, 32 + BN"] * 2
     + ["1×1 conv, 64, /2 + BN"] + ["1×1 conv, 64 + BN"] * 2),
])
def test_block_diagram_labels_every_skip_by_what_it_is(shortcut, skips):
    dot = block_diagram(trace(preset("resnet20", shortcut=shortcut)), "block", fold=False).source
    into_adds = [label for _, head, label in _edges(dot) if head.endswith(".add")]
    main = [label for tail, head, label in _edges(dot) if head.endswith(".add") and tail.endswith("bn2")]
    assert len(into_adds) == 18 and len(main) == 9
    assert sorted(label for label in into_adds if label) == sorted(skips)
    assert dot.count("cluster_layer") == 3 + 9  # stages and blocks
    assert _labels(dot).count("+") == 9


def test_layer_diagram_draws_the_projection_modules():
    dot = block_diagram(trace(preset("resnet20")), "layer", fold=False).source
    assert "conv 1×1, 32, /2" in _labels(dot) and "conv 1×1, 64, /2" in _labels(dot)
    assert ("layer1.2.relu#2", "layer2.0.downsample.0", "") in [(a, b, "") for a, b, _ in _edges(dot)]


def test_identical_blocks_fold_into_one_cluster():
    t = trace(preset("resnet110"))
    folded = block_diagram(t, "block").source
    # stage 1's 18 blocks are all alike; stages 2 and 3 open with a downsampling block, then 17 alike
    assert folded.count("label=\"+\"") == 5
    assert "layer1.0 – layer1.17  ×18" in folded and "layer2.1 – layer2.17  ×17" in folded
    assert "peripheries=2" in folded
    unfolded = block_diagram(t, "block", fold=False).source
    assert unfolded.count("label=\"+\"") == 54
    # the edge out of a folded run leaves from its representative
    assert ("layer1.0.relu#2", "layer2.0.conv1") in [(a, b) for a, b, _ in _edges(folded)]


def test_resnet152_block_diagram_stays_small():
    dot = block_diagram(trace(preset("resnet152")), "block").source
    assert dot.count("label=\"+\"") == 8  # 4 stages × (first block + one folded run)
    assert "layer3.1 – layer3.35  ×35" in dot
    assert len(re.findall(r"^\s*\"?[\w.#]+\"? \[label=", dot, flags=re.M)) < 100


def test_direction_and_bad_arguments():
    t = trace(preset("resnet20"))
    assert "rankdir=LR" in block_diagram(t, "block", direction="LR").source
    with pytest.raises(ValueError, match="level 'blocks' is not one of stage, block, layer"):
        block_diagram(t, "blocks")
    with pytest.raises(ValueError, match="direction 'BT' is not one of TB, LR"):
        block_diagram(t, "block", direction="BT")


def test_torchview_graph_on_meta_leaves_the_model_alone():
    model = build_model(preset("resnet20"))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = computational_graph(model, depth=1)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    shallow, deep = graph.source, computational_graph(preset("resnet20"), depth=3).source
    assert "(1, 3, 32, 32)" in shallow and "(1, 10)" in shallow
    assert len(deep) > 2 * len(shallow)  # nesting depth opens up the blocks
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    assert "(2, 4, 6, 6)" in computational_graph(plain, input_size=(3, 8, 8), batch_size=2).source
    assert all(p.device.type == "cpu" for p in plain.parameters())
