"""A LightningModule with losskit losses trains under Lightning's CPU precisions, like one with torch's losses."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning")

import losskit.nn  # noqa: E402

C = 5  # classes


class Classifier(L.LightningModule):
    def __init__(self, loss_module: type[torch.nn.Module]):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, C))
        self.loss = loss_module(weight=torch.linspace(0.5, 2.0, C), label_smoothing=0.05)
        self.losses: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.losses.append(loss.detach().float())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def _loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, :C].argmax(1) + (x[:, 5] > 1).long()) % C
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)


def _fit(loss_module, precision: str) -> Classifier:
    model = Classifier(loss_module)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, _loader())
    return model


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_trains_with_class_weighted_cross_entropy(precision):
    ours = _fit(losskit.nn.CrossEntropyLoss, precision)
    theirs = _fit(torch.nn.CrossEntropyLoss, precision)
    assert len(ours.losses) == len(theirs.losses) == 12  # 3 epochs × 4 batches
    ours_curve, theirs_curve = torch.stack(ours.losses), torch.stack(theirs.losses)
    assert torch.isfinite(ours_curve).all()
    assert ours_curve[-4:].mean() < ours_curve[:4].mean()  # it learns
    tol = {"32-true": 1e-5, "bf16-mixed": 2e-2}[precision]
    torch.testing.assert_close(ours_curve, theirs_curve, rtol=tol, atol=tol)
    for p, q in zip(theirs.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=10 * tol, atol=10 * tol)
