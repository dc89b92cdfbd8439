"""MNIST and CIFAR-10/100 through torchvision, read from ``data.root``; the paper's
CIFAR augmentation (random crop with padding 4, horizontal flip) on the train split."""

from __future__ import annotations

from pathlib import Path

from agd_ray.config import ConfigError

# torchvision is imported where it is used: it takes seconds to import, and the
# MNIST-1D path (every quick trial) never needs it.

# name -> ((C, H, W), num_classes)
VISION_SPECS = {
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
_CLASSES = {"mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def transforms_for(name: str, train: bool):
    from torchvision import transforms

    normalise = [transforms.ToTensor(), transforms.Normalize(*_STATS[name])]
    if train and name.startswith("cifar"):
        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        return transforms.Compose(augment + normalise)
    return transforms.Compose(normalise)


def load_vision(name: str, root: str | None, download: bool):
    """(train, the train images without augmentation, test) datasets."""
    if root is None:
        raise ConfigError("data.root", f"{name} is read from data.root; set it")
    if not download and not Path(root).is_dir():
        raise ConfigError("data.root", f"{root}: no such folder")
    from torchvision import datasets

    cls = getattr(datasets, _CLASSES[name])
    try:
        train = cls(root, train=True, download=download, transform=transforms_for(name, True))
        plain = cls(root, train=True, download=False, transform=transforms_for(name, False))
        test = cls(root, train=False, download=download, transform=transforms_for(name, False))
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        hint = "" if download else " (set data.download: true to let torchvision fetch it)"
        raise ConfigError("data.root", f"{root}: no {name} found: {err}{hint}") from err
    return train, plain, test
