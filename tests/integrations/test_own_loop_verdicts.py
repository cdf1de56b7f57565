"""The verdict for one model trained three ways: by the engine (`gdsoftmax report`), by a plain PyTorch loop and by
Lightning (each saving SETTING/SEED.npz for `gdsoftmax compare`). The three loops draw batches differently, so
their numbers differ; the decision the verdict reaches must not."""

from __future__ import annotations

import pytest
import torch

from gdsoftmax.analysis.predictions import save_predictions
from gdsoftmax.cli import main
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.loss import GradientDecayLoss

BETAS, SEEDS, EPOCHS, LR, BATCH = (1.0, 5.0), (0, 1, 2), 30, 0.05, 100

CONFIG = f"""name = "digits_loops"
[data]
val_size = 0.1
[model]
name = "fcnn"
[train]
epochs = {EPOCHS}
batch_size = {BATCH}
lr = {LR}
[sweep]
"loss.beta" = {list(BETAS)}
seed = {list(SEEDS)}
"""


def decision(report: str) -> str:
    """The verdict's closing judgement, without its numbers: what it says to do about β."""
    lines = report.splitlines()
    verdict = lines[lines.index("## Verdict") + 1 :]
    closing = next(line for line in verdict if line.startswith("Temperature scaling of"))
    return closing.split("% ECE. ", 1)[1]


def splits():
    data = load_dataset("digits", val_size=0.1)
    return [(data.normalize(split.images), split.labels) for split in (data.train, data.val, data.test)], data


def plain_loop(beta: float, seed: int):
    """A textbook loop: shuffled mini-batches, SGD, the β-loss; returns the model."""
    (train, _, _), data = splits()
    torch.manual_seed(seed)
    model = build_model("fcnn", data.image_shape, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion = GradientDecayLoss(beta=beta)
    generator = torch.Generator().manual_seed(seed)
    images, labels = train
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(labels), generator=generator).split(BATCH):
            optimizer.zero_grad()
            criterion(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model


def save_plain(folder, beta: float, seed: int) -> None:
    (_, (val_x, val_y), (test_x, test_y)), _ = splits()
    model = plain_loop(beta, seed).eval()
    with torch.no_grad():
        save_predictions(folder / f"beta={beta:g}" / f"{seed}.npz", model(val_x), val_y, model(test_x), test_y)


def save_lightning(folder, beta: float, seed: int) -> None:
    lightning = pytest.importorskip("lightning")
    from gdsoftmax.integrations.lightning import SavePredictions

    (train, val, test), data = splits()

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = build_model("fcnn", data.image_shape, data.num_classes)
            self.criterion = GradientDecayLoss(beta=beta)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            return self.criterion(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)

    def loader(split, shuffle):
        dataset = torch.utils.data.TensorDataset(*split)
        return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=shuffle,
                                           generator=torch.Generator().manual_seed(seed) if shuffle else None)

    torch.manual_seed(seed)
    module = Module()
    callback = SavePredictions(folder / f"beta={beta:g}" / f"{seed}.npz", loader(val, False), loader(test, False))
    trainer = lightning.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader(train, True))


def test_the_engine_a_plain_loop_and_lightning_reach_the_same_verdict(tmp_path, capsys):
    config = tmp_path / "loops.toml"
    config.write_text(CONFIG)
    assert main(["sweep", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "runs" / "digits_loops")]) == 0
    decisions = {"engine": decision((tmp_path / "runs" / "digits_loops" / "report.md").read_text())}
    for name, save in (("plain", save_plain), ("lightning", save_lightning)):
        for beta in BETAS:
            for seed in SEEDS:
                save(tmp_path / name, beta, seed)
        assert main(["compare", str(tmp_path / name)]) == 0
        report = (tmp_path / name / "report" / "report.md").read_text()
        assert "beta=5 against beta=1 over 3 seeds" in report
        decisions[name] = decision(report)
    assert decisions["plain"] == decisions["engine"], decisions
    assert decisions["lightning"] == decisions["engine"], decisions
