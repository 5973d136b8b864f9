"""Training curves: a PNG written next to the checkpoints, TensorBoard scalars and visdom plots.

All three read the same per-epoch history, a dict of equal-length lists::

    {"epoch": [1, 2, ...], "train_loss": [...], "val_loss": [...], "wer": [...], "cer": [...], "lr": [...]}
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("deepspeech.logger")

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "wer", "cer", "lr")


def empty_history() -> dict[str, list]:
    return {k: [] for k in HISTORY_KEYS}


def plot_curves_png(history: dict[str, list], path: str | Path, title: str = "") -> Path:
    """Loss (train and validation) and WER/CER per epoch, side by side, written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = history["epoch"]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train loss")
    ax_loss.plot(epochs, history["val_loss"], "s-", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("CTC loss per utterance")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_err.plot(epochs, history["wer"], "o-", label="val WER")
    ax_err.plot(epochs, history["cer"], "s-", label="val CER")
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("%")
    ax_err.legend()
    ax_err.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


class TensorBoardLogger:
    """Scalars per epoch: train/loss, val/loss, val/wer, val/cer, lr."""

    def __init__(self, log_dir: str | Path, run_id: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
        self.writer = SummaryWriter(log_dir=str(Path(log_dir) / run_id))

    def log_epoch(self, history: dict[str, list]) -> None:
        i = -1
        epoch = history["epoch"][i]
        self.writer.add_scalar("train/loss", history["train_loss"][i], epoch)
        self.writer.add_scalar("val/loss", history["val_loss"][i], epoch)
        self.writer.add_scalar("val/wer", history["wer"][i], epoch)
        self.writer.add_scalar("val/cer", history["cer"][i], epoch)
        self.writer.add_scalar("lr", history["lr"][i], epoch)
        self.writer.flush()

    def log_history(self, history: dict[str, list]) -> None:
        """Replay a resumed run's earlier epochs (TensorBoard keeps the last value per step)."""
        for n in range(len(history["epoch"])):
            self.log_epoch({k: v[: n + 1] for k, v in history.items()})

    def close(self) -> None:
        self.writer.close()


class VisdomLogger:
    """Loss, WER and CER per epoch in one visdom window; a resumed run continues the same window.

    The server is optional: when it cannot be reached the logger warns once and turns itself off.
    """

    def __init__(self, run_id: str, server: str = "http://localhost", port: int = 8097):
        try:
            import visdom
        except ImportError as e:
            raise ImportError("--visdom needs the visdom package: pip install visdom") from e
        self.run_id = run_id
        self.win = f"{run_id}_curves"
        self.enabled = True
        try:
            self.viz = visdom.Visdom(server=server, port=port, raise_exceptions=True, use_incoming_socket=False)
            if not self.viz.check_connection(timeout_seconds=2):
                raise ConnectionError(f"no visdom server at {server}:{port}")
        except Exception as e:  # visdom raises a variety of connection errors
            self._disable(e)

    def _disable(self, error: Exception) -> None:
        if self.enabled:
            log.warning("visdom server unavailable (%s); continuing without visdom plots", error)
        self.enabled = False

    def log_history(self, history: dict[str, list]) -> None:
        """Draw the whole history into the window (replacing what it held)."""
        if not self.enabled or not history["epoch"]:
            return
        import numpy as np

        x = np.array(history["epoch"], dtype=float)
        y = np.stack([history["train_loss"], history["wer"], history["cer"]], axis=1).astype(float)
        opts = {
            "title": self.run_id,
            "xlabel": "epoch",
            "ylabel": "loss / %",
            "legend": ["train loss", "val WER", "val CER"],
        }
        try:
            self.viz.line(X=np.stack([x] * 3, axis=1), Y=y, win=self.win, opts=opts)
        except Exception as e:  # connection lost mid-run
            self._disable(e)

    log_epoch = log_history
