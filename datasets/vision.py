"""torchvision's CIFAR-10/100, MNIST and Fashion-MNIST (downloaded when `download = true`).

CIFAR also reads an ImageFolder copy, `root/train/<class>/*` + `root/test/<class>/*`
(e.g. the JPEG CIFAR-10 in ../shared/data); class folders sort into torchvision's order.
"""
from __future__ import annotations

from pathlib import Path

from torchvision import datasets as tvd

from compare.datasets.base import DatasetAdapter
from compare.datasets.folder import has_class_folders, image_folder
from compare.datasets.registry import register_dataset
from compare.datasets.transforms import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    FASHION_MNIST_STATS,
    MNIST_STATS,
    crop_flip,
)
from compare.errors import DataError


class TorchvisionAdapter(DatasetAdapter):
    dataset_class: type
    stats: tuple
    size: int
    flip: bool  # horizontal flips preserve the label (not for digits)
    padding: int
    expected: str  # what a valid root contains, for the error message

    def default_transforms(self, train: bool) -> list:
        return crop_flip(self.size, self.padding, self.flip) if train and self.augment else []

    def load_data(self):
        train_tf, test_tf = self.transform(train=True), self.transform(train=False)
        if has_class_folders(self.root, "train") and has_class_folders(self.root, "test"):
            return image_folder(self.root / "train", train_tf), image_folder(self.root / "test", test_tf)
        made = missing_folders(self.root)  # what a failed download must not leave behind
        try:
            train = self.dataset_class(str(self.root), train=True, transform=train_tf, download=self.download)
            test = self.dataset_class(str(self.root), train=False, transform=test_tf, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            remove_empty(made)
            hint = "" if self.download else "; set data.download = true to fetch it"
            raise DataError(f"data.root: no {self.dataset_class.__name__} at {self.root} (expected {self.expected}){hint}") from err
        except OSError as err:  # offline, a refused connection, a full disk
            remove_empty(made)
            raise DataError(f"data.root: downloading {self.dataset_class.__name__} into {self.root} failed ({type(err).__name__}: {' '.join(str(err).split())}); where offline, point data.root at a copy and set data.download = false") from err
        return train, test


def missing_folders(root) -> list[Path]:
    """`root` and the folders above it that do not exist yet, deepest first."""
    path, out = Path(root).absolute(), []
    while not path.exists():
        out.append(path)
        path = path.parent
    return out


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders that compare created and left empty (deepest first); never anything else."""
    for folder in folders:
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            return


@register_dataset("cifar10")
class CIFAR10(TorchvisionAdapter):
    dataset_class, stats, size, flip, padding = tvd.CIFAR10, CIFAR10_STATS, 32, True, 4
    expected = "cifar-10-batches-py/ or train/ and test/ class folders"


@register_dataset("cifar100")
class CIFAR100(TorchvisionAdapter):
    dataset_class, stats, size, flip, padding = tvd.CIFAR100, CIFAR100_STATS, 32, True, 4
    expected = "cifar-100-python/ or train/ and test/ class folders"


@register_dataset("mnist")
class MNIST(TorchvisionAdapter):
    dataset_class, stats, size, flip, padding = tvd.MNIST, MNIST_STATS, 28, False, 2
    expected = "MNIST/raw/"


@register_dataset("fashion_mnist")
class FashionMNIST(TorchvisionAdapter):
    dataset_class, stats, size, flip, padding = tvd.FashionMNIST, FASHION_MNIST_STATS, 28, True, 2
    expected = "FashionMNIST/raw/"
