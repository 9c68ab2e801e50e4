"""``losskit demo``: the classic training loop, with ``losskit.nn.CrossEntropyLoss`` as the criterion.

A small MLP learns scikit-learn's bundled 8x8 digits (no download). Every batch's loss is also
computed by ``torch.nn.CrossEntropyLoss`` on the same logits, and the largest difference (of the loss
and of its gradient with respect to the logits) is reported at the end: switching by import changes
nothing but the import.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._util import CliError, num, pyplot, require, save_figure

_BATCH_SIZE = 32
_HIDDEN = 128
_LR = 0.1
_MOMENTUM = 0.9
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0  # the train/test split is the same whatever --seed is


def add_parser(commands) -> None:
    p = commands.add_parser(
        "demo",
        help="train a small MLP on the bundled digits with losskit.nn.CrossEntropyLoss",
        description="Seed 002's training loop on scikit-learn's bundled digits, with losskit.nn.CrossEntropyLoss "
        "as the criterion and torch.nn.CrossEntropyLoss checked on every batch.",
    )
    p.add_argument("--epochs", type=int, default=20, metavar="N", help="passes over the training set (default 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the weights and the batch order")
    p.add_argument(
        "--out", type=Path, default=Path("losskit-demo"), metavar="DIR", help="where demo.png goes (./losskit-demo)"
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="E",
        help="passed to both criteria, to show they agree with options too (default 0)",
    )
    p.set_defaults(run=run)


@dataclass
class _History:
    batch_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    max_loss_diff: float = 0.0
    max_grad_diff: float = 0.0


def _data(datasets, model_selection):
    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        digits.data, digits.target, test_size=_TEST_FRACTION, random_state=_SPLIT_SEED, stratify=digits.target
    )

    def features(a):
        return torch.tensor(a, dtype=torch.float32) / 16.0  # pixel intensities are 0..16

    def labels(a):
        return torch.tensor(a, dtype=torch.int64)

    return features(x_train), labels(y_train), features(x_test), labels(y_test)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise CliError(f"--epochs must be at least 1, got {args.epochs}")
    if not 0.0 <= args.label_smoothing <= 1.0:
        raise CliError(f"--label-smoothing must be between 0 and 1, got {args.label_smoothing}")
    console_mod, progress_mod, datasets, model_selection = require(
        "demo", "rich.console", "rich.progress", "sklearn.datasets", "sklearn.model_selection"
    )
    plt = pyplot("demo")
    try:  # fail before training, not after it
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create the output folder {args.out}: {err.strerror or err}") from None
    import losskit

    console = console_mod.Console(highlight=False, soft_wrap=True)
    started = time.perf_counter()
    # A model this small trains fastest on one thread (and the result is then the same on any machine
    # with the same torch build).
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = _data(datasets, model_selection)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, _HIDDEN), torch.nn.ReLU(), torch.nn.Linear(_HIDDEN, 10))
    criterion = losskit.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    reference = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR, momentum=_MOMENTUM)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    order = torch.Generator().manual_seed(args.seed)

    smoothing = f", label_smoothing={args.label_smoothing:g}" if args.label_smoothing else ""
    console.print(
        f"[bold]losskit demo[/bold]: digits 8x8, {len(y_train):,} train / {len(y_test):,} test images\n"
        f"MLP 64-{_HIDDEN}-10, SGD lr={_LR} momentum={_MOMENTUM} cosine, batch {_BATCH_SIZE}, "
        f"{args.epochs} epochs, seed {args.seed}"
    )  # every line under 80 columns: terminals, CI logs and pipes alike
    console.print(f"criterion = losskit.nn.CrossEntropyLoss({smoothing.lstrip(', ')})   (checked against torch.nn's)")

    history = _History()
    batches = math.ceil(len(y_train) / _BATCH_SIZE)
    columns = (
        progress_mod.TextColumn("{task.description}"),
        progress_mod.BarColumn(),
        progress_mod.MofNCompleteColumn(),
        progress_mod.TextColumn("loss {task.fields[loss]}"),
        progress_mod.TimeElapsedColumn(),
    )
    with progress_mod.Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        for epoch in range(1, args.epochs + 1):
            task = progress.add_task(f"epoch {epoch}/{args.epochs}", total=batches, loss="-")
            model.train()
            permutation = torch.randperm(len(y_train), generator=order)
            total = 0.0
            for start in range(0, len(y_train), _BATCH_SIZE):
                index = permutation[start : start + _BATCH_SIZE]
                loss = _train_step(model, criterion, reference, optimizer, x_train[index], y_train[index], history)
                total += loss * len(index)
                progress.update(task, advance=1, loss=f"{loss:.4f}")
            schedule.step()
            history.epoch_loss.append(total / len(y_train))
            test_loss, accuracy = _evaluate(model, criterion, x_test, y_test)
            history.test_loss.append(test_loss)
            history.test_accuracy.append(accuracy)
            progress.remove_task(task)
            width = len(str(args.epochs))
            progress.console.print(
                f"epoch {epoch:>{width}}/{args.epochs}  train loss {history.epoch_loss[-1]:.4f}  "
                f"test loss {test_loss:.4f}  test accuracy {100 * accuracy:.1f}%"
            )

    batches_seen = len(history.batch_loss)
    console.print(
        f"parity with torch.nn.CrossEntropyLoss: max |Δloss| = {history.max_loss_diff:.1e} "
        f"over {batches_seen:,} batches"
    )
    console.print(f"gradient w.r.t. the logits: max |Δgrad| = {history.max_grad_diff:.1e}")
    path = save_figure(_figure(plt, history, args), args.out / "demo.png")
    console.print(f"plot: {path}   ({time.perf_counter() - started:.1f} s)")
    console.print(f"test accuracy: {100 * history.test_accuracy[-1]:.1f}%")
    return 0


def _train_step(model, criterion, reference, optimizer, x, y, history: _History) -> float:
    """One step of a plain training loop, plus the same batch through torch.nn.CrossEntropyLoss."""
    outputs = model(x)
    outputs.retain_grad()
    loss = criterion(outputs, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    logits = outputs.detach().requires_grad_()
    expected = reference(logits, y)
    expected.backward()
    history.max_loss_diff = max(history.max_loss_diff, abs(loss.item() - expected.item()))
    history.max_grad_diff = max(history.max_grad_diff, (outputs.grad - logits.grad).abs().max().item())
    history.batch_loss.append(loss.item())
    return loss.item()


@torch.no_grad()
def _evaluate(model, criterion, x, y) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return criterion(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def _figure(plt, history: _History, args: argparse.Namespace):
    epochs = range(1, len(history.epoch_loss) + 1)
    per_epoch = len(history.batch_loss) / len(history.epoch_loss)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = [(i + 1) / per_epoch for i in range(len(history.batch_loss))]
    left.plot(steps, history.batch_loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="batch (train)")
    left.plot(epochs, history.epoch_loss, "o-", color="tab:blue", markersize=3.5, label="epoch mean (train)")
    left.plot(epochs, history.test_loss, "s--", color="tab:orange", markersize=3.5, label="test")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("cross entropy (log scale)")
    left.set_title("loss: losskit.nn.CrossEntropyLoss")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    left.text(
        0.02,
        0.03,
        f"max |Δloss| vs torch.nn.CrossEntropyLoss = {history.max_loss_diff:.1e}",
        transform=left.transAxes,
        fontsize=8,
        color="0.3",
    )
    from matplotlib.ticker import MaxNLocator

    for panel in (left, right):
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy = [100 * a for a in history.test_accuracy]
    right.plot(epochs, accuracy, "o-", color="tab:green", markersize=3.5)
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy (%)")
    right.set_title(f"test accuracy: {accuracy[-1]:.1f}%")
    right.set_ylim(min(80.0, min(accuracy) - 2), 100)
    right.grid(True, alpha=0.3)
    fig.suptitle(
        f"losskit demo: MLP on scikit-learn's digits, {len(accuracy)} epochs, seed {args.seed}"
        + (f", label smoothing {num(args.label_smoothing)}" if args.label_smoothing else "")
    )
    fig.tight_layout()
    return fig
