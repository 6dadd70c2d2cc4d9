"""`[data] cache = "memory" | "device"`: decode the dataset once into a tensor, then assemble
every batch by indexing it with the seeded permutation and augment it on the device.

    decode once:  adapter (ToImage + Resize/CenterCrop) -> images uint8 [N, C, H, W], labels [N]
    every step:   the sampler's indices -> images[idx] (on the device, or pinned RAM -> device)
                  -> crop/flip per sample, ToDtype, Normalize (runner/data/batch_augment.py)

The batches hold exactly the samples the DataLoader path would load at each step (the same
batch samplers over the same ResumableRandomSampler: runner/data/loaders.py makes both), so
mid-epoch resume and DDP sharding work unchanged. `[data] disk_cache` keeps the decoded
tensors in <root>/.compare-cache/, keyed by the dataset's identity and the content of the
files under root.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

from compare import atomic, nested
from compare.resolve import components

from compare.resolve import references
from compare.data.batch_augment import BatchPipeline, UnsupportedStep, split_steps
from compare.errors import CompareWarning, ConfigError, DataError, Problem, one_line

CACHE_DIR = ".compare-cache"
FORMAT = 2  # version of the cache file's layout (2: the val split, its indices, the split sources)
KEYS = {"format", "classes", "transformed", "train_images", "train_labels", "test_images", "test_labels", "val_indices", "sources"}
DECODE_BATCH = 256  # images decoded (and stacked) per DataLoader batch


@dataclass
class CachedSplit:
    images: torch.Tensor  # [N, C, H, W] as decoded: uint8, or the dataset's own dtype (digits: float32); a structured input: each tensor stacked
    labels: torch.Tensor  # [N], collated as the DataLoader would; on the CPU, as the engine expects targets
    pipeline: BatchPipeline

    def __len__(self) -> int:
        return nested.batch_size(self.labels)

    def finish(self, x):
        """The batch pipeline on a batch of cached inputs; of a structured input (image and
        metadata), on its image: the first tensor, as `input_shape` reads it (docs/performance.md)."""
        if nested.is_tensor(x):
            return self.pipeline(x)
        done = iter([True])
        return nested.map_tensors(lambda t: self.pipeline(t) if next(done, False) else t, x)

    @property
    def targets(self) -> torch.Tensor | None:  # read by compare.assemble.preflight's label checks (one tensor of labels only)
        return self.labels if nested.is_tensor(self.labels) else None


@dataclass
class CachedData:
    """PreparedData's interface (train, test, input_shape, classes) over cached tensors."""

    train: CachedSplit
    test: CachedSplit
    input_shape: tuple[int, ...]
    classes: list[str]
    val: CachedSplit | None = None
    val_indices: list[int] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------- which steps run where


def plan_pipelines(adapter, d, source: str = "<config>") -> dict[bool, tuple[list, BatchPipeline]]:
    """{train: (decode steps, batch pipeline)} for the adapter's configured or default steps; a
    step the cached path cannot run is a ConfigError naming the key it came from."""
    if getattr(adapter, "collate_fn", None) is not None:  # [data] collate is refused with the config; this is the adapter's own
        raise ConfigError([Problem(source, "data.cache", f'{type(adapter).__name__} has a collate_fn; the decoded cache stacks same-size samples and runs none: set data.cache = "none"')])
    plans = {}
    for train in (True, False):
        configured = d.train_transforms if train else d.eval_transforms
        try:
            decode, batch = split_steps(adapter.steps(train), train)
        except UnsupportedStep as err:
            key = f"data.{'train' if train else 'eval'}_transforms[{err.index}]" if configured is not None else ("data.augment" if train else "data.dataset")
            origin = "" if configured is not None else f" ({type(adapter).__name__}'s default transforms)"
            raise ConfigError([Problem(source, key, f"{err.reason}{origin}")]) from None
        plans[train] = (decode, BatchPipeline(batch.crop, batch.flip, adapter.stats))
    return plans


def check_input(adapter, d, x, source: str = "<config>") -> None:
    """A structured input (an image and a mask, an image and metadata) with a random batch step:
    refused. The cache crops and flips the input's first tensor alone; it cannot tell a mask
    (moved with the image) from metadata (left alone), and the uncached path moves only what
    the dataset's own transform moves, so the two paths would train on different batches."""
    if nested.is_tensor(x):
        return
    steps = adapter.steps(True)
    i = next((i for i, s in enumerate(steps) if isinstance(s, (v2.RandomCrop, v2.RandomHorizontalFlip))), None)
    if i is None:
        return
    key = f"data.train_transforms[{i}]" if d.train_transforms is not None else "data.augment"
    members = [(repr(k), v) for k, v in x.items()] if isinstance(x, Mapping) else [(f"#{k}", v) for k, v in enumerate(x)]
    first, *others = [(name, nested.shape_of(v)) for name, v in members]
    rest = ", ".join(f"{name} {shape}" for name, shape in others)
    raise ConfigError([Problem(source, key, f"{type(steps[i]).__name__} runs on whole cached batches and moves the input's first member ({first[0]}) alone; "
                               f"{rest} would not move with it: set data.cache = \"none\" and transform the members together in the dataset "
                               "(torchvision.transforms.v2 moves an image and a tv_tensors.Mask at once)")])


def check_specs(specs: list | None, train: bool) -> list[tuple[int, str]]:
    """Config validation: (index, reason) for each `[data] *_transforms` entry data.cache cannot run."""
    steps = components.build_transforms(specs or [])
    try:
        split_steps(steps, train)
    except UnsupportedStep as err:
        return [(err.index, err.reason)]
    return []


# ---------------------------------------------------------------- decode (or read the disk cache)


def load_cached_data(d, base_dir: str | Path, seed: int, device: torch.device, source: str = "<config>") -> CachedData:
    """The `[data]` dataset decoded once, on `device` for cache = "device", else in RAM."""
    adapter = components.build_adapter(d, base_dir)
    plans = plan_pipelines(adapter, d, source)
    path = cache_path(adapter, d, seed, plans) if d.disk_cache else None
    state = read_cache(path) if path is not None and path.exists() else None
    if state is None:
        adapter.decode_only({train: plans[train][0] for train in plans})
        try:
            state = decode(components.prepare_dataset(adapter, d, seed), adapter, d.num_workers)
        finally:
            adapter.decode_steps = None  # a live adapter instance may be used again without cache
        if path is not None:
            write_cache(path, state)
    check_input(adapter, d, nested.first(state["train_images"]), source)  # a structured input with a random batch step: refused
    home = device if d.cache == "device" else torch.device("cpu")
    splits = {}
    for train, name in ((True, "train"), (False, "val"), (False, "test")):
        if f"{name}_images" not in state:
            continue
        pipeline = plans[train][1]  # val: the eval pipeline
        if not state["transformed"][name]:  # the adapter ignored self.transform: items are final
            pipeline = BatchPipeline(finish=False)
        splits[name] = CachedSplit(nested.to(state[f"{name}_images"], home), state[f"{name}_labels"], pipeline)
    input_shape = splits["train"].pipeline.output_shape(tuple(nested.tensors(state["train_images"])[0].shape[1:]))
    return CachedData(splits["train"], splits["test"], input_shape, list(state["classes"]), splits.get("val"), state["val_indices"], dict(state["sources"]))


def decode(prepared, adapter, num_workers: int = 0) -> dict:
    """Every train, val and test item of the prepared (subset) datasets, once, stacked."""
    state = {"format": FORMAT, "classes": list(prepared.classes), "val_indices": prepared.val_indices, "sources": dict(prepared.sources)}
    for name, ds in (("train", prepared.train), ("val", prepared.val), ("test", prepared.test)):
        if ds is None:
            continue
        # Own generator: decoding must not draw from the global stream (workers' base seed).
        loader = DataLoader(ds, batch_size=DECODE_BATCH, num_workers=num_workers, collate_fn=stack_items, generator=torch.Generator())
        chunks = list(references.call_user(f"decoding {type(adapter).__name__}'s {name} split", list, loader))
        state[f"{name}_images"] = nested.cat([c[0] for c in chunks])  # each tensor of a structured input
        state[f"{name}_labels"] = nested.cat([c[1] for c in chunks])
    # Splits whose dataset called self.transform: their items still need the batch pipeline.
    state["transformed"] = {"train": True in adapter.decoded_splits, "val": False in adapter.decoded_splits, "test": False in adapter.decoded_splits}
    return state


def stack_items(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for decoding: images as plain tensors (not tv_tensors, which weights_only cannot load)."""
    if not isinstance(items[0][0], torch.Tensor) and nested.tensors(items[0][0]):  # a structured input: each tensor stacked, as default_collate does
        plain = [(nested.map_tensors(lambda t: t.as_subclass(torch.Tensor), x), y) for x, y in items]
        try:
            return default_collate([x for x, _ in plain]), default_collate([y for _, y in plain])
        except RuntimeError as err:
            raise DataError(f"data.cache needs every input tensor in one shape per key; {one_line(err)} (set data.cache = \"none\" and pad in a collate function)") from None
    images = [x.as_subclass(torch.Tensor) if isinstance(x, torch.Tensor) else x for x, _ in items]
    shapes = {tuple(x.shape) for x in images if isinstance(x, torch.Tensor)}
    if len(shapes) != 1 or not all(isinstance(x, torch.Tensor) for x in images):
        found = ", ".join(str(s) for s in sorted(shapes)[:3]) or type(images[0]).__name__
        raise DataError(f"data.cache needs every image as a tensor of one shape; found {found} (add a Resize to data.train_transforms / eval_transforms, or set data.cache = \"none\")")
    return torch.stack(images), default_collate([y for _, y in items])


def cache_path(adapter, d, seed: int, plans) -> Path:
    root = Path(d.root).expanduser()
    name = d.dataset if isinstance(d.dataset, str) and not references.is_reference(d.dataset) else type(adapter).__name__
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return root / CACHE_DIR / f"{name}-{cache_key(adapter, d, seed, plans)}.pt"


def cache_key(adapter, d, seed: int, plans) -> str:
    """sha256 over what the decoded tensors depend on: the adapter (class, its module's source,
    arguments), the seeded subsets, the decode steps, and every file under root but the cache."""
    cls = type(adapter)
    module = inspect.getmodule(cls)
    try:
        code = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        code = ""
    identity = {
        "format": FORMAT,
        "adapter": f"{cls.__module__}.{cls.__qualname__}",
        "code": hashlib.sha256(code.encode()).hexdigest(),
        "args": d.args,
        "attributes": {k: v for k, v in vars(adapter).items() if k not in ("train_transforms", "eval_transforms", "decode_steps", "decoded_splits")},
        "subset": [d.subset, d.test_subset, seed, d.val_fraction],
        "decode": [repr(plans[train][0]) for train in (True, False)],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode())
    root = Path(d.root).expanduser()
    for path in sorted(root.rglob("*")) if root.is_dir() else ():
        relative = path.relative_to(root)
        if relative.parts[0] == CACHE_DIR or not path.is_file():
            continue
        with open(path, "rb") as f:
            digest.update(f"{relative.as_posix()}\0".encode() + hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:32]


def read_cache(path: Path) -> dict | None:
    """The cached tensors; None (with a warning) when the file is unreadable: it is decoded again."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT or not KEYS <= set(state):
            raise ValueError(f"not a compare cache of format {FORMAT}")
        return state
    except Exception as err:  # noqa: BLE001 - a broken cache costs a decode, never the run
        warnings.warn(f"data.disk_cache: {path} is unreadable ({type(err).__name__}: {one_line(err)}); decoding again", CompareWarning, stacklevel=2)
        return None


def write_cache(path: Path, state: dict) -> None:
    """Atomic: a reader sees the old file, the new one, or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.atomic_write(path) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        warnings.warn(f"data.disk_cache: cannot write {path} ({getattr(err, 'strerror', None) or err}); the run goes on without it", CompareWarning, stacklevel=2)


# ---------------------------------------------------------------- batches


class CachedLoader:
    """What the engine needs of a DataLoader (`for x, y in loader`, `len(loader)`), over a
    cached split: each batch indexed from the tensor, moved to `device`, run through the split's
    BatchPipeline there. Augmentation draws from the global CPU generator, which the engine
    makes the data stream while it asks for a batch (compare.engine.loop.seeded_batches)."""

    def __init__(self, split: CachedSplit, batches, device: torch.device, generator: torch.Generator):
        self.split, self.batches, self.device, self.generator = split, batches, device, generator
        # RAM -> CUDA: gather into pinned memory, so the copy can overlap (non_blocking).
        self.pin = nested.tensors(split.images)[0].device.type == "cpu" and device.type == "cuda"

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        # As DataLoader's iterator: one int64 (its workers' base seed) from the loader's
        # generator before the sampler draws its permutation; the same indices follow.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return (self.batch(indices) for indices in self.batches)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x on the device, through the pipeline; y on the CPU: the engine moves it, and keeps
        the evaluation targets on the CPU as with a DataLoader)."""
        index = torch.tensor(indices, dtype=torch.long)
        x = nested.map_tensors(lambda images: self.gather(images, index), self.split.images)  # each tensor of a structured input
        y = nested.take(self.split.labels, index)
        return self.split.finish(nested.to(x, self.device, non_blocking=True)), nested.map_tensors(torch.Tensor.pin_memory, y) if self.pin else y

    def gather(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.pin:
            x = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
            return torch.index_select(images, 0, index, out=x)
        return images[index.to(images.device, non_blocking=True)]

