"""int8 against float32 on this CPU, in one run: latency at batch 1, throughput at batch 256, bytes, accuracy.

    .venv/bin/python -m benchmarks.bench_int8                                        # random weights: speed, bytes
    .venv/bin/python -m benchmarks.bench_int8 --data synthetic --train-epochs 3      # + accuracy after brief training
    .venv/bin/python -m benchmarks.bench_int8 --checkpoint /tmp/r20/checkpoint.pt --data PATH_TO/cifar10.tar.gz

Three ways to run one network (ResNet-20 unless a checkpoint says otherwise): float32 in eager PyTorch (how the
app and ``load_checkpoint`` run it); float32 compiled by Inductor with frozen weights (BN folded: the same
compiler as int8, so the like-for-like anchor); int8 from resnet_viz.quantization.int8 (torchao PT2E static
quantization, compiled to oneDNN int8 kernels). Each is timed in rounds taken in turn, and the median round is
reported, so that a noisy shared machine slows all three alike. Calibration uses training images when data is
given, else random inputs (then only speed and bytes mean anything).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import machine
from resnet_viz import build_model, preset
from resnet_viz.data import load_dataset
from resnet_viz.quantization.fake import calibration_batches
from resnet_viz.quantization.int8 import (
    CompiledModel,
    export_program,
    images_per_s,
    latency_ms,
    quantize_int8,
    save_program,
    tensor_bytes,
)
from resnet_viz.training import Trainer, TrainSettings, accuracy, load_checkpoint

CPU = torch.device("cpu")


def the_model(args, data):
    """The model to measure and where its weights come from, in words."""
    if args.checkpoint:
        model, config, meta = load_checkpoint(args.checkpoint)
        return model, config, f"checkpoint {args.checkpoint} (its validation accuracy: {meta.get('val_acc', 0):.2%})"
    config = preset(args.arch)
    if args.train_epochs and data is not None:
        trainer = Trainer(config, data, TrainSettings(epochs=args.train_epochs, batch_size=256, lr=0.2))
        result = trainer.run()
        weights = f"trained here for {result.epochs_done:g} epochs ({result.train_seconds:.0f} s)"
        return trainer.model.float().to(memory_format=torch.contiguous_format).eval(), config, weights
    return build_model(config).eval(), config, "random weights: speed and bytes only, accuracy means nothing"


def time_rounds(runners: dict, shape: tuple[int, ...], rounds: int, batch: int) -> dict[str, dict[str, float]]:
    """Median over rounds of each runner's batch-1 latency (ms) and batch throughput (images/s)."""
    seen: dict[str, dict[str, list[float]]] = {name: {"latency": [], "throughput": []} for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            seen[name]["latency"].append(latency_ms(run, shape, runs=100, warmup=10))
            seen[name]["throughput"].append(images_per_s(run, shape, batch=batch, runs=5, warmup=1))
    return {name: {k: statistics.median(v) for k, v in lists.items()} for name, lists in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset for calibration and accuracy: synthetic, cifar10, a folder or .tar.gz")
    parser.add_argument("--checkpoint", help="a resnet-viz checkpoint.pt to quantize")
    parser.add_argument("--arch", default="resnet20", help="preset to build when there is no checkpoint")
    parser.add_argument("--train-epochs", type=int, default=0, help="without a checkpoint: train this long first")
    parser.add_argument("--calibration", type=int, default=512, help="training images that calibrate int8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(machine.describe())

    data = load_dataset(args.data) if args.data else None
    model, config, weights = the_model(args, data)
    shape = config.input_shape
    print(f"{config.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {weights}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f"; {data.describe()}" if data is not None else ""))

    start = time.perf_counter()
    if data is not None:
        calibration = calibration_batches(data, CPU, images=args.calibration)
    else:
        calibration = [torch.randn(128, *shape) for _ in range(max(1, args.calibration // 128))]
    int8_program = quantize_int8(model, calibration)
    print(f"quantized in {time.perf_counter() - start:.1f} s ({sum(len(x) for x in calibration)} calibration "
          f"images)")
    fp32_program = export_program(model, shape)

    with tempfile.TemporaryDirectory() as folder:
        files = {"fp32": save_program(fp32_program, Path(folder) / "fp32.pt2"),
                 "int8": save_program(int8_program, Path(folder) / "int8.pt2")}
        file_bytes = {k: p.stat().st_size for k, p in files.items()}
    held = {"fp32": sum(tensor_bytes(fp32_program).values()), "int8": sum(tensor_bytes(int8_program).values())}

    runners = {"fp32 eager": model, "fp32 compiled": CompiledModel(fp32_program),
               "int8 compiled": CompiledModel(int8_program)}
    for name in ("fp32 compiled", "int8 compiled"):
        start = time.perf_counter()
        with torch.no_grad():
            for batch in (1, args.batch):
                runners[name](torch.randn(batch, *shape))
        print(f"{name}: compiled for batch 1 and {args.batch} in {time.perf_counter() - start:.1f} s")
    speed = time_rounds(runners, shape, args.rounds, args.batch)

    measure_accuracy = data is not None and not weights.startswith("random")
    acc = {name: accuracy(run, data, CPU, batch_size=args.batch) for name, run in runners.items()} \
        if measure_accuracy else {}
    sizes = {"fp32 compiled": "fp32", "int8 compiled": "int8"}  # eager runs the module itself, not a file
    print()
    print(f"{'':<14} {'batch 1 (ms)':>12} {f'batch {args.batch} (img/s)':>20} {'accuracy':>9} "
          f"{'file (bytes)':>13} {'tensors (bytes)':>16}")
    for name, s in speed.items():
        a = f"{acc[name]:.2%}" if name in acc else "—"
        kind = sizes.get(name)
        f, t = (f"{file_bytes[kind]:,}", f"{held[kind]:,}") if kind else ("—", "—")
        print(f"{name:<14} {s['latency']:>12.2f} {s['throughput']:>20,.0f} {a:>9} {f:>13} {t:>16}")
    print()
    int8 = speed["int8 compiled"]
    for anchor in ("fp32 eager", "fp32 compiled"):
        base = speed[anchor]
        line = (f"int8 vs {anchor}: throughput {int8['throughput'] / base['throughput']:.2f}×, "
                f"batch-1 latency {base['latency'] / int8['latency']:.2f}× faster")
        if acc:
            line += f", accuracy {100 * (acc['int8 compiled'] - acc[anchor]):+.2f} points"
        print(line)
    print(f"int8 file {file_bytes['fp32'] / file_bytes['int8']:.2f}× smaller "
          f"(tensors {held['fp32'] / held['int8']:.2f}× smaller; the rest of the file is the graph)")


if __name__ == "__main__":
    main()
