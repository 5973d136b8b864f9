"""Train a DeepSpeech model with CTC loss.

    python train.py                                    # the AN4 recipe on CPU (data/an4.py first)
    python train.py --cuda --amp                       # the same on a GPU with mixed precision
    torchrun --nproc_per_node 2 train.py --cuda        # DDP over 2 GPUs (gloo on CPU)
    python train.py --continue-from models/deepspeech_last.pth   # resume exactly

The effective configuration is printed at start and stored in every checkpoint.
The best model by validation WER goes to --model-path; --save-folder holds the
resumable checkpoints and the training curves (curves.png).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from data.augment import AugmentConfig
from data.data_loader import (
    AudioConfig,
    AudioDataLoader,
    AudioError,
    BucketingSampler,
    DistributedBucketingSampler,
    ManifestError,
    SpectrogramDataset,
    TranscriptError,
    load_labels,
)
from decoder import GreedyDecoder
from logger import TensorBoardLogger, VisdomLogger, empty_history, plot_curves_png
from model import ModelConfig, build_model
from utils import (
    CheckpointError,
    evaluate,
    load_model,
    package_audio_config,
    save_checkpoint,
    unwrap_model,
)

log = logging.getLogger("deepspeech.train")

# Flags that define the network; on --continue-from they come from the checkpoint.
ARCH_FLAGS = ("arch", "hidden_size", "hidden_layers", "rnn_type", "bidirectional", "conv_channels", "dropout")
AUDIO_FLAGS = ("sample_rate", "window_size", "window_stride", "window")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train-manifest", default="data/an4_train_manifest.csv", help="CSV manifest to train on")
    g.add_argument("--val-manifest", default="data/an4_val_manifest.csv",
                   help="CSV manifest for validation and model selection (never the test set)")
    g.add_argument("--labels-path", default=None, help="JSON list of labels, blank '_' first (default: English letters)")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--no-shuffle", action="store_true", help="keep the duration-sorted order every epoch")
    g.add_argument("--no-sortaGrad", dest="no_sorta_grad", action="store_true",
                   help="shuffle from the first epoch instead of going shortest-first (SortaGrad)")
    g = p.add_argument_group("audio (stored in the model)")
    g.add_argument("--sample-rate", type=int, default=16000)
    g.add_argument("--window-size", type=float, default=0.02, help="STFT window in seconds")
    g.add_argument("--window-stride", type=float, default=0.01, help="STFT hop in seconds")
    g.add_argument("--window", default="hamming", choices=["hamming", "hann", "blackman", "bartlett"])
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="ds2", choices=["ds2", "ds1"], help="Deep Speech 2 (conv + RNN) or Deep Speech 1")
    g.add_argument("--hidden-size", type=int, default=384)
    g.add_argument("--hidden-layers", type=int, default=None,
                   help="RNN layers (default: 3 for ds2, 1 for ds1 as in the paper)")
    g.add_argument("--rnn-type", default="lstm", choices=["rnn", "gru", "lstm"],
                   help="LSTM is the default: on CPU its padded kernel is faster than GRU's")
    g.add_argument("--no-bidirectional", dest="bidirectional", action="store_false",
                   help="unidirectional RNNs with a lookahead convolution")
    g.add_argument("--conv-channels", type=int, default=32, help="channels of the two DS2 conv layers")
    g.add_argument("--dropout", type=float, default=0.0)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1.5e-3)
    g.add_argument("--optim", default="adamw", choices=["sgd", "adamw"])
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Nesterov when > 0)")
    g.add_argument("--weight-decay", type=float, default=1e-5)
    g.add_argument("--max-norm", type=float, default=400.0, help="clip gradients to this global norm")
    g.add_argument("--learning-anneal", type=float, default=1.0,
                   help="divide the learning rate by this after every epoch (schedule 'anneal')")
    g.add_argument("--lr-schedule", default="onecycle", choices=["anneal", "cosine", "onecycle"],
                   help="per-epoch annealing, cosine decay, or one-cycle (warm up then cosine)")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (cosine/anneal)")
    g.add_argument("--seed", type=int, default=123456)
    AugmentConfig.add_args(p)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save-folder", default="models/", help="resumable checkpoints and curves.png")
    g.add_argument("--model-path", default="models/an4.pth", help="best model by validation WER")
    g.add_argument("--checkpoint", action="store_true", help="also keep deepspeech_{epoch}.pth every epoch")
    g.add_argument("--checkpoint-per-batch", type=int, default=0,
                   help="write a resumable checkpoint every N batches (0: off)")
    g.add_argument("--continue-from", default=None, help="resume training exactly from this checkpoint")
    g.add_argument("--finetune", action="store_true",
                   help="with --continue-from: take the weights only, start a fresh optimizer and epoch count")
    g.add_argument("--stop-after-epoch", type=int, default=None,
                   help="stop cleanly after this epoch (resume later with --continue-from)")
    g = p.add_argument_group("devices")
    g.add_argument("--cuda", action="store_true", help="train on the GPU")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g = p.add_argument_group("logging")
    g.add_argument("--visdom", action="store_true", help="plot loss/WER/CER to a visdom server")
    g.add_argument("--visdom-server", default="http://localhost")
    g.add_argument("--visdom-port", type=int, default=8097)
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to --log-dir")
    g.add_argument("--log-dir", default="visualize/deepspeech_final")
    g.add_argument("--id", default="deepspeech", help="run name for visdom and TensorBoard")
    g.add_argument("--silent", action="store_true", help="no progress bar, no per-epoch lines")
    return p


# ----------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    # Tuples of plain values and ndarrays are converted so the checkpoint loads with weights_only=True.
    state["python"] = [state["python"][0], list(state["python"][1]), state["python"][2]]
    np_state = state["numpy"]
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def audio_config_from_args(args: argparse.Namespace) -> AudioConfig:
    return AudioConfig(args.sample_rate, args.window_size, args.window_stride, args.window)


def model_config_from_args(args: argparse.Namespace, audio_cfg: AudioConfig, labels: list[str]) -> ModelConfig:
    """The architecture the flags ask for; --hidden-layers defaults to 3 for ds2 and 1 for ds1."""
    return ModelConfig(
        arch=args.arch,
        n_features=audio_cfg.n_freq,
        n_classes=len(labels),
        hidden_size=args.hidden_size,
        hidden_layers=args.hidden_layers or (1 if args.arch == "ds1" else 3),
        rnn_type=args.rnn_type,
        bidirectional=args.bidirectional,
        conv_channels=args.conv_channels,
        dropout=args.dropout,
    )


def make_optimizer(args: argparse.Namespace, params) -> torch.optim.Optimizer:
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0,
                               weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int):
    """A LambdaLR over training batches, so its state is one integer and resume is exact."""
    total = max(1, args.epochs * steps_per_epoch)
    warmup = args.warmup_steps
    if args.lr_schedule == "onecycle" and warmup == 0:
        warmup = max(1, int(0.1 * total))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if args.lr_schedule == "anneal":
            return args.learning_anneal ** -(step // max(1, steps_per_epoch))
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ctc_feasible(out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """True where an utterance has enough output frames for its transcript: CTC needs one
    frame per label plus one blank between each pair of repeated labels."""
    ends = target_lengths.cumsum(0)
    repeats = torch.zeros_like(target_lengths)
    if targets.numel() > 1:
        same = targets[1:] == targets[:-1]
        # a pair straddling two utterances is not a repeat
        last = ends[:-1] - 1
        same[last[(last >= 0) & (last < same.numel())]] = False
        owner = torch.repeat_interleave(torch.arange(len(target_lengths)), target_lengths)[1:]
        repeats.index_add_(0, owner[same], torch.ones_like(owner[same]))
    return out_lengths >= target_lengths + repeats


class StopRequested(Exception):
    pass


class GracefulStop:
    """SIGTERM/SIGINT finish the current step, write a resumable checkpoint and stop."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test runner thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d received: stopping after this step and writing a checkpoint", signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0
        self.device = self._device()
        if self.distributed:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.save_folder = Path(args.save_folder)
        self.last_path = self.save_folder / "deepspeech_last.pth"

    def _device(self) -> torch.device:
        if self.args.cuda:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def info(self, msg: str, *a) -> None:
        if self.is_main and not self.args.silent:
            log.info(msg, *a)

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        args = self.args
        seed_everything(args.seed)
        resume_pkg = None
        if args.continue_from:
            model, resume_pkg = load_model(args.continue_from, self.device)
            if not args.finetune and "optimizer" not in resume_pkg:
                raise CheckpointError(
                    f"{args.continue_from}: holds a model but no training state; "
                    "use --finetune to start a new run from its weights"
                )
            self.audio_cfg = package_audio_config(resume_pkg)
            self.labels = list(resume_pkg["labels"])
            self._warn_overridden(resume_pkg)
        else:
            self.audio_cfg = audio_config_from_args(args)
            self.labels = load_labels(args.labels_path)
            model = build_model(model_config_from_args(args, self.audio_cfg, self.labels)).to(self.device)

        augment = AugmentConfig.from_args(args)
        self.train_set = SpectrogramDataset(args.train_manifest, self.audio_cfg, self.labels, augment=augment,
                                            on_error="skip", seed=args.seed)
        self.val_set = SpectrogramDataset(args.val_manifest, self.audio_cfg, self.labels, on_error="skip")
        sampler_kw = dict(batch_size=args.batch_size, shuffle=not args.no_shuffle,
                          sortagrad=not args.no_sorta_grad, seed=args.seed)
        if self.distributed:
            self.sampler = DistributedBucketingSampler(self.train_set, num_replicas=self.world_size,
                                                       rank=self.rank, **sampler_kw)
        else:
            self.sampler = BucketingSampler(self.train_set, **sampler_kw)
        self.train_loader = AudioDataLoader(self.train_set, batch_sampler=self.sampler, num_workers=args.num_workers)
        self.val_loader = AudioDataLoader(
            self.val_set,
            batch_sampler=BucketingSampler(len(self.val_set), batch_size=max(args.batch_size, 16), shuffle=False),
            num_workers=args.num_workers,
        )
        self.steps_per_epoch = len(self.sampler)

        self.attach_model(model)
        self.scheduler = make_scheduler(self.optimizer, args, self.steps_per_epoch)
        self.decoder = GreedyDecoder(self.labels)

        self.epoch = 0  # epochs completed
        self.step = 0
        self.history = empty_history()
        self.best_wer = math.inf
        if resume_pkg is not None and not args.finetune:
            self._restore(resume_pkg)
        if self.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

        self.tb = TensorBoardLogger(args.log_dir, args.id) if args.tensorboard and self.is_main else None
        self.viz = (VisdomLogger(args.id, server=args.visdom_server, port=args.visdom_port)
                    if args.visdom and self.is_main else None)
        if self.history["epoch"]:
            for logger in (self.tb, self.viz):
                if logger is not None:
                    logger.log_history(self.history)

    def attach_model(self, model: nn.Module) -> None:
        """Take ``model`` (on this trainer's device) with a fresh optimizer, gradient scaler and
        skip counters: everything :meth:`train_step` needs."""
        self.model = model
        self.optimizer = make_optimizer(self.args, model.parameters())
        self.use_scaler = self.args.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.counters = {"skipped_nonfinite": 0, "skipped_too_short": 0}

    def _warn_overridden(self, pkg: dict) -> None:
        given = {k: getattr(self.args, k) for k in ARCH_FLAGS + AUDIO_FLAGS}
        stored = {**pkg["model_config"], **pkg["audio_config"]}
        differ = [k for k, v in given.items() if k in stored and stored[k] != v]
        defaults = vars(build_parser().parse_args([]))
        differ = [k for k in differ if given[k] != defaults[k]]
        if differ:
            log.warning("--continue-from: the architecture and audio come from %s; ignoring %s",
                        self.args.continue_from, ", ".join("--" + k.replace("_", "-") for k in differ))

    def _restore(self, pkg: dict) -> None:
        self.optimizer.load_state_dict(pkg["optimizer"])
        self.scheduler.load_state_dict(pkg["scheduler"])
        if pkg.get("scaler") and self.use_scaler:
            self.scaler.load_state_dict(pkg["scaler"])
        try:
            self.sampler.load_state_dict(pkg["sampler"])
        except ValueError:
            # batch size or process count changed: the interrupted epoch restarts from its beginning
            log.warning("--continue-from: batches per epoch changed; epoch %d restarts from its first batch",
                        pkg["sampler"]["epoch"] + 1)
            self.sampler.load_state_dict({**pkg["sampler"], "batches_done": 0, "n_batches": len(self.sampler)})
        self.epoch = pkg["epoch"]
        self.step = pkg["step"]
        self.history = {k: list(v) for k, v in pkg["history"].items()}
        self.best_wer = pkg.get("best_wer", math.inf)
        self.counters.update(pkg.get("counters", {}))
        set_rng_state(pkg["rng"])
        self.info("resumed from %s: %d epochs done, step %d", self.args.continue_from, self.epoch, self.step)

    # -- checkpoints ------------------------------------------------------------------

    def _package_extra(self, with_training_state: bool) -> dict:
        extra = {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best_wer": self.best_wer if math.isfinite(self.best_wer) else None,
            "counters": dict(self.counters),
            "args": {k: v for k, v in vars(self.args).items()},
        }
        if with_training_state:
            extra.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict() if self.use_scaler else None,
                sampler=self.sampler.state_dict(),
                rng=rng_state(),
            )
        return extra

    def save(self, path: Path, with_training_state: bool = True) -> None:
        if not self.is_main:
            return
        extra = self._package_extra(with_training_state)
        if extra["best_wer"] is None:
            extra.pop("best_wer")
        save_checkpoint(path, self.model, self.audio_cfg, self.labels, **extra)

    # -- loop ---------------------------------------------------------------------------

    def train_step(self, batch) -> float | None:
        """One optimizer step; returns the loss per utterance, or None if the step was skipped.

        Utterances too short for their transcript are dropped from the loss and counted; a
        non-finite loss or gradient skips the whole step and is counted. Under DDP every rank
        still runs backward (with a zero loss) so the gradient all-reduce never deadlocks.
        """
        inputs = batch.inputs.to(self.device, non_blocking=True)
        input_lengths = batch.input_lengths.to(self.device)
        targets, target_lengths = batch.targets, batch.target_lengths
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.args.amp):
            log_probs, out_lengths = self.model(inputs, input_lengths)
        ok = ctc_feasible(out_lengths.cpu(), targets, target_lengths)
        if not ok.all():
            self.counters["skipped_too_short"] += int((~ok).sum())
            for i in torch.nonzero(~ok).flatten().tolist():
                log.debug("skipping %s: too short for its transcript", batch.paths[i])
        # CTCLoss wants (T, B, C); frames past out_lengths are ignored by it.
        losses = nn.functional.ctc_loss(
            log_probs.float().transpose(0, 1),
            targets.to(self.device),
            out_lengths,
            target_lengths.to(self.device),
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        n_ok = int(ok.sum())
        loss = (losses * ok.to(losses.device)).sum() / max(1, n_ok)
        usable = n_ok > 0 and bool(torch.isfinite(loss))
        if n_ok > 0 and not usable:
            self.counters["skipped_nonfinite"] += 1
        if not usable:
            if not self.distributed:
                return None
            loss = log_probs.float().nan_to_num(0.0).sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_norm)
        if usable and not torch.isfinite(grad_norm):
            self.counters["skipped_nonfinite"] += 1
            usable = False
        if not usable:
            if self.use_scaler:  # lets GradScaler lower its scale after an overflow
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def run(self) -> dict:
        args = self.args
        self.info("configuration:\n%s", json.dumps(self.effective_config(), indent=2, default=str))
        if self.train_set.skipped or self.val_set.skipped:
            self.info("skipped at load: %d training and %d validation utterances (see warnings above)",
                      len(self.train_set.skipped), len(self.val_set.skipped))
        stopped_early = False
        with GracefulStop() as stop:
            while self.epoch < args.epochs:
                epoch_loss, n_steps = self._train_epoch(stop)
                if stop.requested:
                    self.save(self.last_path)
                    self.info("stopped in epoch %d at step %d; resume with --continue-from %s",
                              self.epoch + 1, self.step, self.last_path)
                    stopped_early = True
                    break
                self.epoch += 1
                self._end_epoch(epoch_loss / max(1, n_steps))
                if args.stop_after_epoch is not None and self.epoch >= args.stop_after_epoch:
                    stopped_early = self.epoch < args.epochs
                    break
        if self.tb is not None:
            self.tb.close()
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        return {
            "epochs_done": self.epoch,
            "stopped_early": stopped_early,
            "best_wer": self.best_wer,
            "history": self.history,
            "counters": self.counters,
        }

    def _train_epoch(self, stop: GracefulStop) -> tuple[float, int]:
        from tqdm import tqdm

        self.model.train()
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        total, n_steps, utts, audio_s = 0.0, 0, 0, 0.0
        start = time.perf_counter()
        bar = tqdm(total=len(self.sampler), initial=self.sampler.batches_done, desc=f"epoch {self.epoch + 1}",
                   disable=self.args.silent or not self.is_main, unit="batch", leave=False, dynamic_ncols=True)
        for batch in self.train_loader:
            loss = self.train_step(batch)
            self.scheduler.step()  # the schedule follows batches, skipped or not
            self.sampler.batches_done += 1
            if loss is not None:
                total += loss
                n_steps += 1
                self.step += 1
            utts += len(batch.paths)
            audio_s += float(batch.input_lengths.sum()) * self.audio_cfg.hop_length / self.audio_cfg.sample_rate
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{total / max(1, n_steps):.2f}", utt_s=f"{utts / elapsed:.1f}",
                            x_rt=f"{audio_s / elapsed:.1f}")
            bar.update()
            per_batch = self.args.checkpoint_per_batch
            if per_batch and self.sampler.batches_done % per_batch == 0:
                self.save(self.save_folder / f"deepspeech_checkpoint_epoch_{self.epoch + 1}_iter_"
                          f"{self.sampler.batches_done}.pth")
                self.save(self.last_path)
            if stop.requested:
                break
        bar.close()
        self.epoch_time = time.perf_counter() - start
        self.epoch_audio_s = audio_s
        return total, n_steps

    def _end_epoch(self, train_loss: float) -> None:
        args = self.args
        # skipped counts on other ranks are not gathered: rank 0 reports its own share
        if self.is_main:
            result = evaluate(unwrap_model(self.model), self.val_loader, self.decoder, self.device, amp=args.amp)
            lr = self.optimizer.param_groups[0]["lr"]
            for k, v in zip(("epoch", "train_loss", "val_loss", "wer", "cer", "lr"),
                            (self.epoch, train_loss, result.loss, result.wer, result.cer, lr)):
                self.history[k].append(v)
            improved = result.wer < self.best_wer
            if improved:
                self.best_wer = result.wer
            skipped = sum(self.counters.values())
            self.info(
                "epoch %d/%d  train loss %.3f  val loss %.3f  WER %.2f  CER %.2f  lr %.2e  %.0fs (%.1fx realtime)%s%s",
                self.epoch, args.epochs, train_loss, result.loss, result.wer, result.cer, lr, self.epoch_time,
                self.epoch_audio_s / max(self.epoch_time, 1e-9), "  *best*" if improved else "",
                f"  skipped {self.counters}" if skipped else "",
            )
            if improved:
                self.save(Path(args.model_path), with_training_state=False)
            if args.checkpoint:
                self.save(self.save_folder / f"deepspeech_{self.epoch}.pth")
            self.save(self.last_path)
            plot_curves_png(self.history, self.save_folder / "curves.png", title=args.id)
            for logger in (self.tb, self.viz):
                if logger is not None:
                    logger.log_epoch(self.history)
        if self.distributed:
            dist.barrier()

    def effective_config(self) -> dict:
        return {
            "args": vars(self.args),
            "model": asdict(unwrap_model(self.model).cfg),
            "audio": self.audio_cfg.to_dict(),
            "labels": "".join(self.labels),
            "device": str(self.device),
            "world_size": self.world_size,
            "train_utterances": len(self.train_set),
            "val_utterances": len(self.val_set),
            "steps_per_epoch": self.steps_per_epoch,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda given but no CUDA device is available; drop --cuda to train on the CPU")
    if args.finetune and not args.continue_from:
        parser.error("--finetune needs --continue-from MODEL")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_workers < 0 or args.checkpoint_per_batch < 0:
        parser.error("--num-workers and --checkpoint-per-batch must be >= 0")
    AugmentConfig.from_args(args, parser)  # refuses invalid augmentation flags and ones that would do nothing
    if args.continue_from and not Path(args.continue_from).is_file():
        parser.error(f"--continue-from {args.continue_from}: file not found")
    for flag in ("train_manifest", "val_manifest"):
        if not Path(getattr(args, flag)).is_file():
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: manifest not found "
                         "(run `python data/an4.py` to prepare AN4, or build one with `python data/utils.py create`)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.silent else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    check_args(parser, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        trainer = Trainer(args)
        trainer.setup()
        result = trainer.run()
    except (CheckpointError, AudioError, ManifestError, TranscriptError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if trainer.is_main and not args.silent:
        best = result["best_wer"]
        log.info("done: %d epochs, best val WER %s, model %s, curves %s", result["epochs_done"],
                 f"{best:.2f}" if math.isfinite(best) else "n/a", args.model_path,
                 Path(args.save_folder) / "curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
