"""The command line, driven as a user drives it: ``python -m losskit ...`` in a subprocess.

Oracles: ``torch.nn.functional`` in float64 (and Keras 3 for the Keras losses) for every ``value:``
line and every printed gradient; PNGs must decode. The explain and bad-input commands run
concurrently (a pool started once per module); variants of the same command run in-process through
``losskit.cli.main`` (the console script's entry point), so the file stays well under a minute.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

F64 = torch.float64
HAS_KERAS_MODULE = importlib.util.find_spec("losskit.keras") is not None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONIOENCODING="utf-8", KERAS_BACKEND="torch", NO_COLOR="1", COLUMNS="200")
    return env


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", env=_env(), timeout=300)


@dataclass(frozen=True)
class InProcess:
    returncode: int
    stdout: str
    stderr: str


def _in_process(argv: list[str], capsys) -> InProcess:
    """The same command through ``losskit.cli.main`` (the console script's entry point), in this process."""
    from losskit.cli import main

    status = main(argv)
    out, err = capsys.readouterr()
    return InProcess(status, out, err)


def t64(text: str) -> torch.Tensor:
    return torch.tensor(json.loads(text), dtype=F64)


def index(text: str) -> torch.Tensor:
    return torch.tensor(json.loads(text), dtype=torch.int64)


# ------------------------------------------------------------------------------------ explain cases


@dataclass(frozen=True)
class Case:
    id: str
    loss: str
    input: str
    target: str
    oracle: Callable[[torch.Tensor, str], torch.Tensor]  # (input leaf, target JSON) -> torch's value
    options: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()  # text the steps must show
    keras: bool = False
    in_process: bool = False  # a variant: run through losskit.cli.main() here, to keep the file fast

    @property
    def argv(self) -> list[str]:
        return ["explain", self.loss, "--input", self.input, "--target", self.target, *self.options]


def _keras_value(name: str, reduction: str = "mean", **kwargs):
    def oracle(x: torch.Tensor, target: str) -> torch.Tensor:
        keras = pytest.importorskip("keras")
        if keras.backend.backend() != "torch":
            pytest.skip("Keras oracle needs KERAS_BACKEND=torch")
        per_sample = getattr(keras.losses, name)(t64(target), x, **kwargs)
        return {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]

    return oracle


W3 = "[0.2, 1, 3]"
CASES = [
    Case(
        "ce-seed003",
        "cross_entropy",
        "[[1.3, 1.3, 2.6]]",
        "[2]",
        lambda x, t: F.cross_entropy(x, index(t)),
        expect=("max = 2.6000", "e = [0.2725, 0.2725, 1.0000]", "p = [0.1764, 0.1764, 0.6472]", "-log p[y] = 0.4351"),
    ),
    Case(
        "ce-weight-smoothing-ignore",
        "ce",
        "[[1.0, 2.0, 0.5], [0.1, -1.0, 2.0], [3.0, 0.0, 0.0], [0.3, 0.2, 0.1]]",
        "[0, 2, -1, 1]",
        lambda x, t: F.cross_entropy(x, index(t), weight=t64(W3), ignore_index=-1, label_smoothing=0.1),
        ("--weight", W3, "--label-smoothing", "0.1", "--ignore-index", "-1"),
        expect=("label smoothing ε = 0.1", "ignore_index: ignored", "sum of the target weights"),
        in_process=True,
    ),
    Case(
        "ce-kdim-none",
        "cross_entropy",
        "[[[1.0, 2.0], [0.5, 0.1], [0.0, -1.0]], [[-1.0, 2.0], [3.0, 0.0], [0.2, 0.2]]]",
        "[[1, 0], [2, 0]]",
        lambda x, t: F.cross_entropy(x, index(t), reduction="none"),
        ("--reduction", "none"),
        expect=("reduction 'none'",),
        in_process=True,
    ),
    Case(
        "ce-probabilities",
        "cross_entropy",
        "[[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]]",
        "[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]",
        lambda x, t: F.cross_entropy(x, t64(t), weight=t64("[1, 2, 3]"), label_smoothing=0.2),
        ("--weight", "[1, 2, 3]", "--label-smoothing", "0.2"),
        expect=("probability per class", "t = (1 - ε) · t + ε/C"),
        in_process=True,
    ),
    Case(
        "ce-unbatched-sum",
        "cross_entropy",
        "[0.5, 1.0, -1.0]",
        "1",
        lambda x, t: F.cross_entropy(x, index(t), reduction="sum"),
        ("--reduction", "sum"),
        in_process=True,
    ),
    Case(
        "ce-all-ignored",
        "cross_entropy",
        "[[0.5, 1.0], [2.0, -1.0]]",
        "[-100, -100]",
        lambda x, t: F.cross_entropy(x, index(t)),
        in_process=True,
    ),
    Case(
        "nll-weight",
        "nll_loss",
        "[[-1.2, -0.4], [-0.1, -2.3], [-0.7, -0.7]]",
        "[0, 1, 1]",
        lambda x, t: F.nll_loss(x, index(t), weight=t64("[0.5, 1.5]")),
        ("--weight", "[0.5, 1.5]"),
        expect=("nll_loss applies no softmax",),
    ),
    Case(
        "bce-clamp",
        "binary_cross_entropy",
        "[0.2, 0.9, 1.0, 0.0, 0.5]",
        "[0, 1, 0.5, 0, 1]",
        lambda x, t: F.binary_cross_entropy(x, t64(t), weight=t64("[1, 2, 1, 1, 0.5]")),
        ("--weight", "[1, 2, 1, 1, 0.5]"),
        expect=("clamped at -100", "-100.0000"),
    ),
    Case(
        "bce-with-logits-pos-weight",
        "bce_with_logits",
        "[[2.0, -1.0], [300.0, -300.0], [0.0, 0.5]]",
        "[[1, 0], [0, 1], [0.5, 0.2]]",
        lambda x, t: F.binary_cross_entropy_with_logits(x, t64(t), pos_weight=t64("[3, 1]"), reduction="sum"),
        ("--pos-weight", "[3, 1]", "--reduction", "sum"),
        expect=("σ(x)", "softplus"),
    ),
    Case(
        "mse-weight",
        "mse_loss",
        "[[1.0, 2.0, 4.0], [0.5, -1.0, 0.0]]",
        "[[1.0, 3.0, 1.0], [0.0, 0.0, 0.0]]",
        lambda x, t: F.mse_loss(x, t64(t), weight=t64("[[1, 2, 3], [0.5, 0.5, 1]]")),
        ("--weight", "[[1, 2, 3], [0.5, 0.5, 1]]"),
        expect=("l = d²", "sum of the weights"),
    ),
    Case(
        "mse-broadcast",
        "mse",
        "[[1.0, 2.0, 4.0]]",
        "[1.0, 3.0, 1.0]",
        lambda x, t: F.mse_loss(x, t64(t)),
        expect=("note: Using a target size",),
        in_process=True,
    ),
    Case(
        "l1-sum",
        "l1_loss",
        "[1.0, 2.0, 4.0, -1.5]",
        "[1.0, 3.0, 1.0, 0.0]",
        lambda x, t: F.l1_loss(x, t64(t), reduction="sum"),
        ("--reduction", "sum"),
        expect=("l = |d|",),
    ),
    Case(
        "smooth-l1-beta",
        "smooth_l1_loss",
        "[0.5, 3.0, -0.2, -1.0]",
        "[0.0, 0.0, 0.0, 0.5]",
        lambda x, t: F.smooth_l1_loss(x, t64(t), beta=0.5),
        ("--beta", "0.5"),
        expect=("β = 0.5", "yes", "no"),
    ),
    Case(
        "smooth-l1-beta0",
        "smooth_l1",
        "[0.5, 3.0, -0.2]",
        "[0.0, 0.0, 0.0]",
        lambda x, t: F.smooth_l1_loss(x, t64(t), beta=0.0),
        ("--beta", "0"),
        expect=("exactly L1",),
        in_process=True,
    ),
    Case(
        "huber-weight-delta",
        "huber_loss",
        "[1.0, 2.0, 3.0, -0.4]",
        "[0.0, 0.0, 0.0, 0.0]",
        lambda x, t: F.huber_loss(x, t64(t), delta=1.5, weight=t64("[1, 2, 3, 4]")),
        ("--delta", "1.5", "--weight", "[1, 2, 3, 4]"),
        expect=("δ = 1.5",),
    ),
    Case(
        "kl-batchmean",
        "kl_div",
        "[[-1.3863, -0.2877], [-0.5, -0.9], [-2.0, -0.2]]",
        "[[0.5, 0.5], [0.0, 1.0], [0.1, 0.9]]",
        lambda x, t: F.kl_div(x, t64(t), reduction="batchmean"),
        ("--reduction", "batchmean"),
        expect=("batch size", "0 · log 0 = 0"),
    ),
    Case(
        "kl-log-target-mean",
        "kl",
        "[[-1.3863, -0.2877], [-0.5, -0.9]]",
        "[[-0.7, -0.7], [-0.1, -2.4]]",
        lambda x, t: F.kl_div(x, t64(t), log_target=True),
        ("--log-target",),
        expect=("log_target=True", "note: reduction: 'mean'"),
        in_process=True,
    ),
    Case(
        "soft-margin",
        "soft_margin_loss",
        "[2.0, -0.5, 0.3]",
        "[1, -1, -1]",
        lambda x, t: F.soft_margin_loss(x, t64(t)),
        expect=("log(1 + exp(-y · x))",),
    ),
    Case(
        "keras-cce-probabilities",
        "categorical_crossentropy",
        "[[0.05, 0.95, 0.0], [0.1, 0.8, 0.1], [2.0, 1.0, 1.0]]",
        "[[0, 1, 0], [0, 0, 1], [1, 0, 0]]",
        _keras_value("categorical_crossentropy", label_smoothing=0.1),
        ("--label-smoothing", "0.1"),
        expect=("rescale each row", "epsilon"),
        keras=True,
    ),
    Case(
        "keras-cce-logits-sum",
        "cce",
        "[[2.0, 1.0, 0.1], [0.1, 0.8, 3.0]]",
        "[[0, 1, 0], [0.2, 0.3, 0.5]]",
        _keras_value("categorical_crossentropy", reduction="sum", from_logits=True),
        ("--from-logits", "--reduction", "sum"),
        expect=("softmax p = e / S",),
        keras=True,
        in_process=True,
    ),
    Case(
        "keras-bce-probabilities",
        "binary_crossentropy",
        "[[0.6, 0.4], [0.4, 0.6], [1.0, 0.0]]",
        "[[0, 1], [0, 0], [1, 0]]",
        _keras_value("binary_crossentropy"),
        expect=("clip y_pred", "mean over the last axis"),
        keras=True,
    ),
    Case(
        "keras-bce-logits-smoothing",
        "binary_crossentropy",
        "[[2.0, -1.0, 0.0], [0.4, 30.0, -3.0]]",
        "[[0, 1, 1], [0, 0.5, 1]]",
        _keras_value("binary_crossentropy", from_logits=True, label_smoothing=0.2),
        ("--from-logits", "--label-smoothing", "0.2"),
        expect=("label smoothing ε = 0.2",),
        keras=True,
        in_process=True,
    ),
]

# the issue's list of losses explain must cover, and the short names some cases use for them
REQUIRED = {
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "kl_div",
    "categorical_crossentropy",
    "binary_crossentropy",
}
SHORT = {
    "ce": "cross_entropy",
    "bce_with_logits": "binary_cross_entropy_with_logits",
    "mse": "mse_loss",
    "smooth_l1": "smooth_l1_loss",
    "kl": "kl_div",
    "cce": "categorical_crossentropy",
}

# (id, argv, text the one error line must contain)
BAD = [
    ("malformed-json", ["explain", "ce", "--input", "[[1, 2,", "--target", "[0]"], "not valid JSON"),
    ("ragged", ["explain", "ce", "--input", "[[1, 2], [3]]", "--target", "[0, 1]"], "ragged"),
    ("not-numbers", ["explain", "mse", "--input", '["a"]', "--target", "[1]"], "numbers"),
    ("target-out-of-range", ["explain", "ce", "--input", "[[1, 2, 3]]", "--target", "[5]"], "5"),
    ("shape-mismatch", ["explain", "mse_loss", "--input", "[1, 2, 3]", "--target", "[1, 2]"], "[3]"),
    ("unknown-loss", ["explain", "hinge_of_doom", "--input", "[1]", "--target", "[1]"], "unknown loss"),
    ("option-not-applicable", ["explain", "mse", "--input", "[1]", "--target", "[1]", "--beta", "1"], "--beta"),
    ("bad-reduction", ["explain", "l1", "--input", "[1]", "--target", "[1]", "--reduction", "avg"], "avg"),
    ("bce-out-of-unit", ["explain", "bce", "--input", "[1.5]", "--target", "[1]"], "between 0 and 1"),
    ("missing-target", ["explain", "ce", "--input", "[[1, 2]]"], "--target"),
    ("plot-unknown", ["plot", "mse_loss", "not_a_loss", "-o", "x.png"], "unknown loss"),
    ("demo-epochs-0", ["demo", "--epochs", "0"], "--epochs"),
]
# these run through losskit.cli.main() in this process (the rest in subprocesses), to keep the file fast
BAD_IN_PROCESS = {"ragged", "not-numbers", "option-not-applicable", "bad-reduction", "bce-out-of-unit", "demo-epochs-0"}


CONSOLE_SCRIPT = Path(sys.executable).with_name("losskit")
HUBER_ARGS = ["explain", "huber", "--input", "[0.5, -2.0]", "--target", "[0.0, 0.0]"]
PLOT_LOSSES = ["mse", "l1_loss", "smooth_l1_loss", "huber_loss", "ce", "bce", "kl_div"]
MISSING_EXTRA = [
    ("matplotlib", ["plot", "mse", "-o", "{tmp}/never.png"]),
    ("rich", ["demo", "--epochs", "1", "--out", "{tmp}/never"]),
]


def _blocked_main(blocked: str, argv: list[str]) -> list[str]:
    """``python -c``: hide an optional package (as if it were not installed), then run the command line."""
    code = f"import sys; sys.modules[{blocked!r}] = None\nfrom losskit.cli import main\nsys.exit(main({argv!r}))\n"
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def pooled(folder: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every command of this file, run concurrently once (each is mostly torch's import time)."""
    module = [sys.executable, "-m", "losskit"]
    jobs = {f"case:{c.id}": module + c.argv for c in CASES if not c.in_process and (HAS_KERAS_MODULE or not c.keras)}
    jobs.update({f"bad:{name}": module + argv for name, argv, _ in BAD if name not in BAD_IN_PROCESS})
    jobs["demo"] = module + ["demo", "--epochs", "2", "--seed", "1", "--out", str(folder / "demo")]
    jobs["plot"] = module + ["plot", *PLOT_LOSSES, "-o", str(folder / "sub" / "curves.png")]
    jobs["bench"] = module + [
        "bench",
        "--quick",
        "--suite",
        "elementwise",
        "--max-cases",
        "1",
        "--out",
        str(folder / "bench"),
    ]
    jobs["bench-bad"] = module + ["bench", "--max-cases", "0"]
    if CONSOLE_SCRIPT.exists():
        jobs["console"] = [str(CONSOLE_SCRIPT), *HUBER_ARGS]
    for blocked, argv in MISSING_EXTRA:
        jobs[f"missing:{blocked}"] = _blocked_main(blocked, [a.format(tmp=folder) for a in argv])
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_run, argv) for key, argv in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def _value(stdout: str):
    last = stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith("value: "), last
    return json.loads(last.removeprefix("value: "))


def _gradient_numbers(stdout: str) -> list[float]:
    """The numbers inside [...] in the gradient step (the last numbered step)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if re.match(r"^\d+\. gradient", line))
    numbers: list[float] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        for group in re.findall(r"\[([^\]]*)\]", line):
            numbers += [float(v) for v in group.split(",")]
    return numbers


def test_the_cases_cover_every_loss_the_issue_names():
    assert {SHORT.get(c.loss, c.loss) for c in CASES} >= REQUIRED


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's own warnings (broadcasting, kl 'mean')
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_explain_value_and_gradient_equal_the_oracle(case: Case, pooled, capsys):
    if case.keras and not HAS_KERAS_MODULE:
        pytest.skip("losskit.keras is not in this checkout yet (the Keras explain entries import it lazily)")
    result = _in_process(case.argv, capsys) if case.in_process else pooled[f"case:{case.id}"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    x = t64(case.input).requires_grad_()
    expected = case.oracle(x, case.target)
    got = torch.tensor(_value(result.stdout), dtype=F64)
    assert got.shape == expected.shape
    # Keras' own ops.mean rounds float64 through float32, so its oracle is only that close
    tolerance = {"rtol": 1e-6, "atol": 1e-9} if case.keras else {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(got, expected.detach().to(F64), equal_nan=True, **tolerance)

    (grad,) = torch.autograd.grad(expected.sum(), x)
    printed = _gradient_numbers(result.stdout)
    assert len(printed) == grad.numel() > 0
    for shown, true in zip(printed, grad.reshape(-1).tolist(), strict=True):
        assert math.isclose(shown, true, rel_tol=2e-4, abs_tol=6e-5), (shown, true)

    steps = re.findall(r"^(\d+)\. ", result.stdout, flags=re.M)
    assert len(steps) >= 3 and steps == [str(i) for i in range(1, len(steps) + 1)]
    for text in case.expect:
        assert text in result.stdout, f"{text!r} not in the explanation"


def test_explain_cross_entropy_shows_each_step_of_seed_003(pooled):
    out = pooled["case:ce-seed003"].stdout
    titles = [line for line in out.splitlines() if re.match(r"^\d+\. ", line)]
    order = ["logits", "shift", "exponentiate", "softmax", "log-probability", "weights", "smoothing", "reduction"]
    assert len(titles) == len(order) + 1 and "gradient" in titles[-1]
    for title, word in zip(titles[:-1], order, strict=True):
        assert word in title
    # softmax of the seed's logits is about [0.18, 0.18, 0.64]; the gradient is p - onehot(2)
    assert "[0.1764, 0.1764, -0.3528]" in out


@pytest.mark.parametrize("name, argv, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_status_2(name, argv, fragment, pooled, capsys):
    result = _in_process(argv, capsys) if name in BAD_IN_PROCESS else pooled[f"bad:{name}"]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("losskit: error: ")
    assert fragment in lines[0]
    assert result.stdout == ""


# ----------------------------------------------------------------------------------- demo and plot


def _decoded_png(path: Path):
    image = pytest.importorskip("matplotlib.image")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas
    return pixels


def test_demo_trains_reports_parity_and_writes_a_png(pooled, folder: Path):
    pytest.importorskip("sklearn")
    pytest.importorskip("rich")
    result = pooled["demo"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    epochs = [re.fullmatch(r"epoch (\d)/2  train loss (\S+)  test loss (\S+)  test accuracy (\S+)%", x) for x in lines]
    epochs = [m for m in epochs if m]
    assert [m.group(1) for m in epochs] == ["1", "2"]
    assert float(epochs[1].group(2)) < float(epochs[0].group(2))  # the training loss goes down
    parity = next(x for x in lines if x.startswith("parity"))
    m = re.fullmatch(r"parity with torch\.nn\.CrossEntropyLoss: max \|Δloss\| = (\S+) over ([\d,]+) batches", parity)
    assert m, parity
    assert float(m.group(1)) < 1e-5
    assert int(m.group(2).replace(",", "")) == 2 * math.ceil(1437 / 32)
    grad = next(x for x in lines if x.startswith("gradient"))
    assert float(re.search(r"= (\S+)$", grad).group(1)) < 1e-5
    final = re.fullmatch(r"test accuracy: (\d+\.\d)%", lines[-1])
    assert final, lines[-1]
    assert float(final.group(1)) == float(epochs[1].group(4)) >= 85.0
    png = folder / "demo" / "demo.png"
    assert f"plot: {png}" in result.stdout
    _decoded_png(png)


def test_plot_writes_a_decodable_png(pooled, folder: Path):
    pytest.importorskip("matplotlib")
    result = pooled["plot"]
    assert result.returncode == 0, result.stderr
    out = folder / "sub" / "curves.png"
    assert result.stdout.strip() == f"plot: {out}"
    pixels = _decoded_png(out)
    assert pixels.shape[1] > pixels.shape[0]  # three columns of panels: error, score, probability


def test_bench_measures_both_libraries_and_writes_csv_and_png(pooled, folder: Path):
    pytest.importorskip("rich")
    pytest.importorskip("matplotlib")
    result = pooled["bench"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "time / torch" in result.stdout and "mse_loss" in result.stdout
    rows = list(csv.DictReader((folder / "bench" / "bench_elementwise.csv").open()))
    metrics = {(r["impl"], r["metric"]) for r in rows}
    for impl in ("torch", "losskit"):  # side by side in one run, time and peak memory for each
        assert {(impl, "forward_backward_ms"), (impl, "peak_extra_mib")} <= metrics
    assert all(float(r["value"]) >= 0 for r in rows)
    assert {r["torch_version"] for r in rows} == {torch.__version__}
    _decoded_png(folder / "bench" / "bench_elementwise.png")
    bad = pooled["bench-bad"]
    assert bad.returncode == 2 and bad.stderr.strip().startswith("losskit: error:") and "--max-cases" in bad.stderr


def test_console_script_runs_explain(pooled):
    if "console" not in pooled:
        pytest.skip(f"no console script next to {sys.executable}")
    result = pooled["console"]
    assert result.returncode == 0, result.stderr
    expected = F.huber_loss(t64(HUBER_ARGS[3]), t64(HUBER_ARGS[5])).item()
    assert _value(result.stdout) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("blocked", [b for b, _ in MISSING_EXTRA])
def test_missing_extra_says_how_to_install_it(blocked, pooled, folder: Path):
    result = pooled[f"missing:{blocked}"]
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("losskit: error:"), result.stderr
    assert "pip install 'losskit[cli]'" in lines[0] and blocked in lines[0]
    assert not (folder / "never.png").exists() and not (folder / "never").exists()
