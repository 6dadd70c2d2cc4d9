"""The code people start from, timed: two copies of the tutorial network (tudui1, tudui2, two
learning rates) trained on CIFAR-10 images in one hand-written loop: one DataLoader pass, one
shared loss object, one optimizer per model. Plain PyTorch; nothing from `compare` is imported.

    python benchmarks/hand_loop.py --root /tmp/cifar10-jpg --steps 20 --repeats 3

The image pipeline is the one `compare` builds for CIFAR-10 with `augment = true` (ToImage,
random crop with padding 4, horizontal flip, float32 in [0, 1], Normalize), so the numbers
line up with `compare bench` on the same models (its `loop` mode is this loop, in-process).
Prints seconds per step and samples·models/s per repeat, then the medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


class Tudui(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="CIFAR-10 ImageFolder copy: ROOT/train/<class>/*.jpg")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (batches) per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    args = parser.parse_args()

    augment = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if args.augment else []
    transform = v2.Compose([v2.ToImage(), *augment, v2.ToDtype(torch.float32, scale=True), v2.Normalize(*CIFAR10_STATS)])
    train_data = torchvision.datasets.ImageFolder(f"{args.root}/train", transform=transform)
    train_dataloader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    if args.warmup + args.steps > len(train_dataloader):
        parser.error(f"--warmup + --steps must fit in one epoch ({len(train_dataloader)} batches)")

    torch.manual_seed(0)
    tudui1, tudui2 = Tudui(), Tudui()
    loss_fn = nn.CrossEntropyLoss()
    optim1 = torch.optim.SGD(tudui1.parameters(), lr=0.01)
    optim2 = torch.optim.SGD(tudui2.parameters(), lr=0.05)
    models, optims = [tudui1, tudui2], [optim1, optim2]

    per_step, throughput = [], []
    for repeat in range(args.repeats):
        batches = iter(train_dataloader)  # a fresh epoch per repeat, as a new run would start
        tick, samples = time.perf_counter(), 0
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                tick, samples = time.perf_counter(), 0
            imgs, targets = next(batches)
            # ---- the user's loop, unchanged
            for model, optim in zip(models, optims):
                loss = loss_fn(model(imgs), targets)
                optim.zero_grad()
                loss.backward()
                optim.step()
            # ----
            samples += len(targets)
        seconds = time.perf_counter() - tick
        per_step.append(seconds / args.steps)
        throughput.append(samples * len(models) / seconds)
        print(f"repeat {repeat + 1}: {per_step[-1]:.4f} s/step, {throughput[-1]:,.0f} samples·models/s, last loss {loss.item():.4f}", flush=True)
    print(
        f"hand-written loop, {len(models)} x Tudui, batch {args.batch_size}, {args.steps} steps after {args.warmup} warmup, "
        f"median of {args.repeats}: {statistics.median(per_step):.4f} s/step, {statistics.median(throughput):,.0f} samples·models/s "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
