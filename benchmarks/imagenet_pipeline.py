"""Images per second of the Ray Data pipeline (Parquet shards -> read_parquet ->
map_batches decode + RandomResizedCrop/flip/normalise -> iter_torch_batches) against
torchvision ImageFolder + DataLoader with the same transforms, on the same cores and
the same JPEGs. Goal: >= 1.0x.

    uv run python benchmarks/imagenet_pipeline.py [--images 2000] [--size 256] [--cpus 2]

The JPEGs are generated (random noise with smooth structure, --size pixels square)
in the ImageNet folder layout and converted with prepare-imagenet first (not timed).
Each pipeline is read once fully to warm up, then timed over --epochs passes.
"""

from __future__ import annotations

import argparse
import os
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


def time_passes(make_iter, epochs: int) -> float:
    for _ in make_iter():  # warm-up pass (process pools, imports)
        pass
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _labels in make_iter():
            n += len(images)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=2)
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

        baseline = time_passes(torch_loader, args.epochs)

        ray.init(num_cpus=args.cpus, include_dashboard=False)
        train = build_datasets(DataConfig(name="imagenet", root=str(shards), image_size=args.crop))[
            "train"
        ]

        def ray_loader():
            for batch in train.iter_torch_batches(batch_size=args.batch):
                # uint8 crops are normalised by the consumer (the GPU in training;
                # counted here on the CPU, to compare like with like)
                yield normalise(batch["image"]), batch["label"]

        ours = time_passes(ray_loader, args.epochs)
        ray.shutdown()

    print(f"{args.images} JPEGs of {args.size}px -> {args.crop}px crops, {args.cpus} CPUs")
    print(f"ImageFolder + DataLoader({args.cpus} workers): {baseline:8.1f} images/s")
    print(f"Ray Data (read_parquet -> map_batches):   {ours:8.1f} images/s")
    print(f"ratio: {ours / baseline:.2f}x  (goal >= 1.0)")


if __name__ == "__main__":
    main()
