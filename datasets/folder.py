"""Class-folder datasets: `root/train/<class>/*` + `root/val/<class>/*` (or `test/`),
the ants/bees layout of the torchvision transfer-learning tutorial. With all three of
train/, val/ and test/, val/ is the val split; with only train/ and val/, val/ is the test
split (the tutorial's meaning), and env.json and the dry-run plan say so."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torchvision import datasets as tvd
from torchvision.transforms import v2

from compare.datasets.base import DatasetAdapter
from compare.datasets.registry import register_dataset
from compare.datasets.transforms import IMAGENET_STATS
from compare.errors import DataError


def has_class_folders(root: Path, split: str) -> bool:
    split_dir = Path(root) / split
    return split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())


def load_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader, but a missing or corrupt file is named in the error."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError) as err:
        detail = type(err).__name__ if path in str(err) else f"{type(err).__name__}: {err}"
        raise DataError(f"cannot read image {path} ({detail})") from None


def refuse_symlink_loops(split_dir: Path) -> None:
    """torchvision walks class folders following symlinks: a link back to a folder above it
    makes that walk endless (a loop through two links) or repeats every image below it once
    per turn. Refuse such a link, naming it, before torchvision walks."""
    above: dict[str, frozenset[str]] = {str(split_dir): frozenset()}
    for dirpath, dirnames, _ in os.walk(split_dir, followlinks=True):
        here = os.path.realpath(dirpath)
        chain = above.pop(dirpath, frozenset()) | {here}
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if os.path.islink(child) and os.path.realpath(child) in chain:
                raise DataError(f"data.root: {child} is a symlink to {os.path.realpath(child)}, a folder that contains it; the image walk would loop (remove the link)")
            above[child] = chain


def image_folder(path: Path, transform) -> tvd.ImageFolder:
    refuse_symlink_loops(path)
    try:
        return tvd.ImageFolder(str(path), transform=transform, loader=load_rgb)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"data.root: cannot read class folders in {path}: {err}") from err


@register_dataset("imagefolder")
class ImageFolderData(DatasetAdapter):
    def __init__(self, root="data", download=False, augment=False, image_size: int = 224, mean: list[float] = IMAGENET_STATS[0], std: list[float] = IMAGENET_STATS[1]):
        """`image_size`: square side the images are resized (or randomly cropped) to, pixels;
        `mean`/`std`: per-channel normalisation (ImageNet statistics by default)."""
        super().__init__(root, download, augment)
        self.image_size, self.stats = image_size, (tuple(mean), tuple(std))

    def load_data(self):
        found = [s for s in ("train", "val", "test") if has_class_folders(self.root, s)]
        if "train" not in found or len(found) < 2:
            raise DataError(f"data.root: {self.root} needs train/<class>/ and val/<class>/ (or test/<class>/) folders of images")
        train = image_folder(self.root / "train", self.transform(train=True))
        if len(found) == 3:
            self.split_sources = {"train": f"{self.root}/train", "val": f"{self.root}/val", "test": f"{self.root}/test"}
            return train, image_folder(self.root / "val", self.transform(train=False)), image_folder(self.root / "test", self.transform(train=False))
        test_split = found[1]
        self.split_sources = {"train": f"{self.root}/train", "test": f"{self.root}/{test_split}" + (" (the val/ folder is the test split: no test/ folder)" if test_split == "val" else "")}
        return train, image_folder(self.root / test_split, self.transform(train=False))

    def default_transforms(self, train: bool) -> list:
        size = self.image_size
        if train and self.augment:
            return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        return [v2.Resize((size, size), antialias=True)]
