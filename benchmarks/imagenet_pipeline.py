"""Images per second of the Ray Data pipeline (Parquet shards -> read_parquet ->
map_batches decode + RandomResizedCrop/flip/normalise -> iter_torch_batches) against
torchvision ImageFolder + DataLoader with the same transforms, on the same cores and
the same JPEGs. Goal: >= 1.0x.

    uv run python benchmarks/imagenet_pipeline.py [--images 2000] [--size 256] [--cpus 2]

The JPEGs are generated (random noise with smooth structure, --size pixels square)
in the ImageNet folder layout and converted with prepare-imagenet first (not timed).
Each pipeline is read once fully to warm up, then timed over --epochs passes.
The machine is often shared, so --repeats N measures the pair N times, alternating
(ImageFolder, then Ray Data on a fresh ray.init), and reports medians; the CPU
time per image (this process and all its descendants: loader workers, Ray's
workers and daemons) is printed too, as it depends much less on other load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_jpegs(root: Path, n: int, size: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for i in range(count):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
            img.save(folder / f"img_{i:06d}.JPEG", quality=90)


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process, its live descendants
    (from /proc) and its reaped children; 0.0 where there is no /proc."""
    import resource

    tick, parent, cpu = os.sysconf("SC_CLK_TCK"), {}, {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack += children.get(pid, [])
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + reaped.ru_utime + reaped.ru_stime


def time_passes(make_iter, epochs: int) -> tuple[float, float]:
    """(images/s, CPU milliseconds per image) over ``epochs`` timed passes."""
    for _ in make_iter():  # warm-up pass (process pools, imports)
        pass
    cpu, start, n = tree_cpu_seconds(), time.perf_counter(), 0
    for _ in range(epochs):
        for images, _labels in make_iter():
            n += len(images)
    rate = n / (time.perf_counter() - start)
    return rate, 1000 * (tree_cpu_seconds() - cpu) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import ray
    import torch
    from torchvision import datasets

    from agd_ray.config import DataConfig
    from agd_ray.data.imagenet import build_datasets, normalise, transforms_for
    from agd_ray.data.imagenet_prepare import prepare_imagenet

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        src, shards = Path(tmp) / "jpeg", Path(tmp) / "shards"
        make_jpegs(src, args.images, args.size)
        prepare_imagenet(str(src), str(shards), shard_size=256, echo=lambda s: None)

        transform = transforms_for(args.crop, train=True, normalise=True)
        folder = datasets.ImageFolder(
            str(src / "train"),
            transform=lambda img: transform(
                __import__("torchvision").transforms.v2.functional.pil_to_tensor(img)
            ),
        )

        def torch_loader():
            return torch.utils.data.DataLoader(
                folder,
                batch_size=args.batch,
                shuffle=True,
                num_workers=args.cpus,
                persistent_workers=False,
            )

        def ray_pass():
            ray.init(num_cpus=args.cpus, include_dashboard=False)
            try:
                train = build_datasets(
                    DataConfig(name="imagenet", root=str(shards), image_size=args.crop)
                )["train"]

                def ray_loader():
                    for batch in train.iter_torch_batches(batch_size=args.batch):
                        # uint8 crops are normalised by the consumer (the GPU in
                        # training; counted here on the CPU, to compare like with like)
                        yield normalise(batch["image"]), batch["label"]

                return time_passes(ray_loader, args.epochs)
            finally:
                ray.shutdown()

        runs = []
        for repeat in range(args.repeats):
            baseline, ours = time_passes(torch_loader, args.epochs), ray_pass()
            runs.append((baseline, ours))
            if args.repeats > 1:
                print(
                    f"repeat {repeat + 1}: ImageFolder {baseline[0]:7.1f} images/s "
                    f"({baseline[1]:.2f} CPU ms/image), Ray Data {ours[0]:7.1f} images/s "
                    f"({ours[1]:.2f} CPU ms/image), ratio {ours[0] / baseline[0]:.2f}x",
                    flush=True,
                )

    def median(values):
        return statistics.median(values)

    baseline = median([b[0] for b, _ in runs]), median([b[1] for b, _ in runs])
    ours = median([o[0] for _, o in runs]), median([o[1] for _, o in runs])
    ratio = median([o[0] / b[0] for b, o in runs])
    which = f"median of {args.repeats} alternating runs, " if args.repeats > 1 else ""
    print(f"{args.images} JPEGs of {args.size}px -> {args.crop}px crops, {args.cpus} CPUs")
    print(f"({which}CPU ms/image = all processes of the pipeline, per image read)")
    print(
        f"ImageFolder + DataLoader({args.cpus} workers): {baseline[0]:8.1f} images/s"
        f"  {baseline[1]:5.2f} CPU ms/image"
    )
    print(
        f"Ray Data (read_parquet -> map_batches):   {ours[0]:8.1f} images/s"
        f"  {ours[1]:5.2f} CPU ms/image"
    )
    print(f"ratio: {ratio:.2f}x  (goal >= 1.0)")


if __name__ == "__main__":
    main()
