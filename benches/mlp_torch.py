"""Measure PyTorch's CPU training throughput of the MLP, LeNet-5 or LSTM benchmark model.

This is the reference for the `mlp-throughput` binary of the dendrite-benches crate, with the
same three models (`--model`):

- mlp: the MLP 784-256-128-10 with ReLU hidden layers and softmax cross-entropy, on the MNIST
  training digits, batch 64.
- lenet: the LeNet-5 style CNN on the same digits as 28x28 images, batch 64.
- lstm: `nn.LSTM(1, 64, batch_first=True)` and `nn.Linear(64, 1)` on the last hidden state,
  MSE loss, on 10,000 windows of 32 steps of a synthetic series, batch 32 (see
  `series_dataset`).

Both sides train with SGD (momentum 0.9, learning rate 0.01). Each epoch is shuffled afresh
from a fixed seed and keeps its last partial batch. The initial weights (PyTorch's default
initialization here) and the shuffle order differ from the Rust side, which changes the loss
but not the work per step. One warm-up epoch runs before the clock starts, and the script
prints one JSON line in the same format as the Rust binary.

Needs torch and numpy, for example in a virtualenv:
    python3 -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy
"""

import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# Steps per window and number of windows of the lstm model.
SERIES_LOOKBACK = 32
SERIES_WINDOWS = 10_000

DEFAULT_BATCH = {"mlp": 64, "lenet": 64, "lstm": 32}


def read_idx(path, expected_magic):
    """Read an IDX file of unsigned bytes (raw or gzip) and return an array of its shape."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)

    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(
            f"{path}: wrong magic number 0x{magic:08X}, expected 0x{expected_magic:08X}"
        )
    num_dims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims)]
    header_len = 4 + 4 * num_dims
    expected = int(np.prod(dims))
    if len(data) - header_len != expected:
        raise ValueError(
            f"{path}: the header declares dimensions {dims}, so expected {expected} bytes "
            f"after the header, found {len(data) - header_len}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def series_dataset():
    """Build the lstm model's windows: features [10000, 32, 1] and targets [10000, 1].

    The series is x_t = sin(0.1 t) + 0.5 sin(0.037 t) for t from 0 to 10,031, computed in float64
    and rounded to float32 as the Rust binary does. Window i has the inputs x_i..x_{i+31} and
    the target x_{i+32}.
    """
    t = np.arange(SERIES_WINDOWS + SERIES_LOOKBACK, dtype=np.float64)
    series = (np.sin(0.1 * t) + 0.5 * np.sin(0.037 * t)).astype(np.float32)
    starts = np.arange(SERIES_WINDOWS)[:, None] + np.arange(SERIES_LOOKBACK)[None, :]
    features = torch.from_numpy(np.ascontiguousarray(series[starts][:, :, None]))
    targets = torch.from_numpy(series[SERIES_LOOKBACK:, None].copy())
    return features, targets


def load_mnist(images_path, labels_path):
    """Read the MNIST features (pixels scaled to [0, 1]) and class labels."""
    images = read_idx(images_path, IMAGES_MAGIC)
    features = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
    labels = torch.from_numpy(read_idx(labels_path, LABELS_MAGIC).astype(np.int64))
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} contains {features.shape[0]} images but {labels_path} contains "
            f"{labels.shape[0]} labels; use the image and label files of the same split"
        )
    return features, labels


class LstmRegressor(nn.Module):
    """An LSTM over [batch, time, 1] windows, then a dense layer on its last hidden state."""

    def __init__(self, hidden=64):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.linear(h_n[-1])


def build_model(name):
    if name == "lstm":
        return LstmRegressor()
    if name == "lenet":
        return nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )
    return nn.Sequential(
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train_epoch(model, optimizer, loss_fn, features, labels, batch, generator):
    """Train one epoch and return the mean batch loss."""
    order = torch.randperm(features.shape[0], generator=generator)
    loss_sum = 0.0
    steps = 0
    for start in range(0, features.shape[0], batch):
        indices = order[start : start + batch]
        x = features[indices]
        y = labels[indices]

        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

        loss_sum += loss.item()
        steps += 1
    return loss_sum / max(steps, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--model",
        choices=["mlp", "lenet", "lstm"],
        default="mlp",
        help="mlp: 784-256-128-10; lenet: the LeNet-5 style CNN; lstm: LSTM with 64 units "
        "on windows of a synthetic series (default mlp)",
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs after one warm-up epoch (default 3)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="rows per mini-batch (default 64 for mlp and lenet, 32 for lstm)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and shuffle order")
    parser.add_argument(
        "--images",
        default="data/mnist/train-images-idx3-ubyte.gz",
        help="IDX image file, raw or gzip, for mlp and lenet (default: the MNIST training images)",
    )
    parser.add_argument(
        "--labels",
        default="data/mnist/train-labels-idx1-ubyte.gz",
        help="IDX label file, raw or gzip, for mlp and lenet (default: the MNIST training labels)",
    )
    args = parser.parse_args()
    if args.batch is None:
        args.batch = DEFAULT_BATCH[args.model]
    for name in ("threads", "epochs", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    if args.model == "lstm":
        features, labels = series_dataset()
        loss_fn = nn.functional.mse_loss
    else:
        features, labels = load_mnist(args.images, args.labels)
        loss_fn = nn.functional.cross_entropy

    model = build_model(args.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    train_epoch(model, optimizer, loss_fn, features, labels, args.batch, generator)

    start = time.perf_counter()
    loss = 0.0
    for _ in range(args.epochs):
        loss = train_epoch(model, optimizer, loss_fn, features, labels, args.batch, generator)
    seconds = time.perf_counter() - start

    samples = features.shape[0] * args.epochs
    steps = -(-features.shape[0] // args.batch) * args.epochs
    result = {
        "framework": "pytorch",
        "model": args.model,
        "version": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "epochs": args.epochs,
        "samples": samples,
        "seconds": round(seconds, 4),
        "samples_per_s": round(samples / seconds, 1),
        "step_us": round(seconds * 1e6 / steps, 1),
        "last_epoch_loss": round(loss, 5),
    }
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
