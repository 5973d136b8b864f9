"""Train a DeepSpeech model with CTC loss.

    python train.py                                    # the AN4 recipe on CPU (data/an4.py first)
    python train.py --cuda --amp                       # the same on a GPU with mixed precision
    torchrun --nproc_per_node 2 train.py --cuda        # DDP over 2 GPUs (gloo on CPU)
    python train.py --continue-from models/deepspeech_last.pth   # resume exactly
    python train.py --continue-from auto               # resume from the newest checkpoint in --save-folder, if any
    python train.py --batch-frames 40000               # batches bounded by padded frames instead of a count

The effective configuration is printed at start and stored in every checkpoint.
The best model by validation WER goes to --model-path; --save-folder holds the
resumable checkpoints and the training curves (curves.png).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from checkpoint import Checkpoint, CheckpointError, TrainingState, load_checkpoint, load_model, save_checkpoint, unwrap_model
from data.audio import AudioConfig, AudioError, median_speech_level_db, with_feature_stats
from data.augment import RECIPE_MIX, AugmentConfig
from data.data_loader import (
    AudioDataLoader,
    BucketingSampler,
    DistributedBucketingSampler,
    DistributedFrameBatchSampler,
    FrameBatchSampler,
    SpectrogramDataset,
)
from data.manifest import ManifestError, read_manifest
from data.text import TranscriptError, load_labels
from data.words import AlignmentFileError, count_aligned, read_alignments
from decoder import GreedyDecoder
from inference import evaluate
from logger import TensorBoardLogger, VisdomLogger, empty_history, plot_curves_png
from model import ModelConfig, build_model
from utils import Progress, flag, make_parser

log = logging.getLogger("deepspeech.train")

RECIPE_WORD_CROP_PROB = 0.25
"""The recipe's share of training utterances cut down to one or two of their words."""
RECIPE_WORD_CROP_SKIP_LETTERS = True
"""The recipe's word crop never cuts out a run made only of spelled letters (recipe v7)."""
RECIPE_AUGMENT_WARMUP_EPOCHS = 6
"""The recipe's first epochs on the utterances as recorded, every augmentation off (recipe v9; recipe v8 had 3)."""
DEFAULT_WORD_ALIGNMENTS = "models/an4_train_words.json"
"""Word alignments of AN4's training set (``python align.py``), used by the recipe's word crop."""

# Flags that define the network and its features; on --continue-from they come from the checkpoint.
ARCH_FLAGS = (
    "arch",
    "hidden_size",
    "hidden_layers",
    "rnn_type",
    "bidirectional",
    "conv_channels",
    "conv_time_stride",
    "lookahead_context",
    "ds1_context",
    "ds1_stride",
    "dropout",
)
AUDIO_FLAGS = ("sample_rate", "window_size", "window_stride", "window", "normalize", "remove_dc")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule. Defaults are the AN4 recipe's."""

    epochs: int = 70
    lr: float = 1.5e-3
    optim: str = "adamw"  # "adamw" | "sgd"
    momentum: float = 0.9  # sgd only (Nesterov when > 0)
    weight_decay: float = 1e-5
    max_norm: float = 400.0
    lr_schedule: str = "onecycle"  # "onecycle" | "cosine" | "anneal"
    learning_anneal: float = 1.0  # anneal only
    warmup_steps: int = 0  # 0 with onecycle: 10 % of all steps

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        d = cls()
        g = parser.add_argument_group("optimisation")
        g.add_argument("--epochs", type=int, default=d.epochs)
        g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=d.lr, help="peak learning rate")
        g.add_argument("--optim", default=d.optim, choices=("adamw", "sgd"))
        g.add_argument("--momentum", type=float, default=d.momentum, help="--optim sgd: momentum (Nesterov when > 0)")
        g.add_argument("--weight-decay", type=float, default=d.weight_decay)
        g.add_argument("--max-norm", type=float, default=d.max_norm, help="clip gradients to this global norm")
        g.add_argument(
            "--lr-schedule",
            default=d.lr_schedule,
            choices=("onecycle", "cosine", "anneal"),
            help="one-cycle (linear warm-up, then cosine), cosine decay, or per-epoch annealing",
        )
        g.add_argument(
            "--learning-anneal",
            type=float,
            default=d.learning_anneal,
            help="--lr-schedule anneal: divide the learning rate by this after every epoch",
        )
        g.add_argument(
            "--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up steps (onecycle: 0 means 10 %% of all steps)"
        )

    @staticmethod
    def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        def given(name: str) -> bool:
            return getattr(args, name) != parser.get_default(name)

        if args.optim != "sgd" and given("momentum"):
            parser.error(f"--momentum applies to --optim sgd; AdamW has no momentum setting (--optim {args.optim})")
        if args.lr_schedule != "anneal" and given("learning_anneal"):
            parser.error(f"--learning-anneal applies to --lr-schedule anneal, not {args.lr_schedule}")
        if args.epochs < 1 or args.lr <= 0 or args.max_norm <= 0 or args.warmup_steps < 0 or args.weight_decay < 0:
            parser.error("need --epochs >= 1, --lr > 0, --max-norm > 0, --warmup-steps >= 0, --weight-decay >= 0")
        if args.learning_anneal <= 0 or args.momentum < 0:
            parser.error("need --learning-anneal > 0 and --momentum >= 0")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OptimConfig":
        return cls(
            args.epochs,
            args.lr,
            args.optim,
            args.momentum,
            args.weight_decay,
            args.max_norm,
            args.lr_schedule,
            args.learning_anneal,
            args.warmup_steps,
        )


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--train-manifest", default="data/an4_train_manifest.csv", help="CSV manifest to train on")
    g.add_argument(
        "--val-manifest",
        default="data/an4_val_manifest.csv",
        help="CSV manifest for validation and model selection (never the test set)",
    )
    g.add_argument("--labels-path", default=None, help="JSON list of labels, blank '_' first (default: English letters)")
    g.add_argument("--batch-size", type=int, default=16, help="utterances per batch (not with --batch-frames)")
    g.add_argument(
        "--batch-frames",
        type=int,
        default=None,
        help="dynamic batches instead of --batch-size: duration-sorted utterances grouped so that "
        "each batch's padded spectrogram frames (longest x count) stay within N (100 frames = 1 s)",
    )
    g.add_argument(
        "--cache-mb",
        type=float,
        default=None,
        help="keep at most this many MB of decoded audio in memory per loader process; 0: decode on "
        "demand only (flat memory). Default: automatic, the whole manifest when its float32 audio "
        "fits in 512 MB, else no cache",
    )
    g.add_argument(
        "--lazy-transcripts",
        action="store_true",
        help="read and check transcripts when an utterance is loaded instead of all at start (large "
        "manifests with a duration column then load without opening a file); bad ones are "
        "skipped and counted",
    )
    g.add_argument(
        "--single-word-repeats",
        type=int,
        default=1,
        metavar="K",
        help="list every training utterance of one word (a recorded command) K times per epoch, each copy "
        "with its own augmentation (not with --lazy-transcripts)",
    )
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--no-shuffle", action="store_true", help="keep the duration-sorted order every epoch")
    g.add_argument(
        "--no-sortaGrad",
        dest="no_sorta_grad",
        action="store_true",
        help="shuffle from the first epoch instead of going shortest-first (SortaGrad)",
    )
    g.add_argument("--seed", type=int, default=123456, help="seeds weights, shuffling and augmentation")
    AudioConfig.add_args(p)
    ModelConfig.add_args(p)
    OptimConfig.add_args(p)
    AugmentConfig.add_args(p, RECIPE_MIX)
    p.set_defaults(word_crop_prob=RECIPE_WORD_CROP_PROB)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save-folder", default="models/", help="resumable checkpoints and curves.png")
    g.add_argument("--model-path", default="models/an4.pth", help="best model by validation WER")
    g.add_argument("--checkpoint", action="store_true", help="also keep deepspeech_{epoch}.pth every epoch")
    g.add_argument("--checkpoint-per-batch", type=int, default=0, help="write a resumable checkpoint every N batches (0: off)")
    g.add_argument(
        "--continue-from",
        default=None,
        help="resume training exactly from this checkpoint; 'auto': from the newest resumable "
        "checkpoint in --save-folder (deepspeech_last.pth or a per-batch one), or start fresh "
        "when there is none (what an elastic torchrun restart needs)",
    )
    g.add_argument(
        "--finetune",
        action="store_true",
        help="with --continue-from: take the weights only, start a fresh optimizer and epoch count",
    )
    g.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL",
        help="start a new run (the architecture and audio config of these flags) from the weights of MODEL "
        "wherever a tensor's name and shape match, e.g. a unidirectional model from a bidirectional one's "
        "forward direction",
    )
    g.add_argument(
        "--stop-after-epoch", type=int, default=None, help="stop cleanly after this epoch (resume later with --continue-from)"
    )
    g = p.add_argument_group("devices")
    g.add_argument("--cuda", action="store_true", help="train on the GPU")
    g.add_argument("--amp", action="store_true", help="mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        help="DDP: seconds a collective waits for the other ranks before failing, so that torchrun "
        "can restart the workers after a rank died",
    )
    g = p.add_argument_group("logging")
    g.add_argument("--visdom", action="store_true", help="plot loss/WER/CER to a visdom server")
    g.add_argument("--visdom-server", default="http://localhost", help="with --visdom")
    g.add_argument("--visdom-port", type=int, default=8097, help="with --visdom")
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to --log-dir")
    g.add_argument("--log-dir", default="visualize/deepspeech_final", help="with --tensorboard")
    g.add_argument("--id", default="deepspeech", help="run name for visdom, TensorBoard and the curves")
    g.add_argument("--silent", action="store_true", help="no progress reports, no per-epoch lines")
    return p


# ----------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_from(model: nn.Module, source: Checkpoint, same_labels: bool) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of ``source`` with the same name and shape (the output layer
    only when the labels are the same); returns (copied, left fresh). A bidirectional model's
    forward RNNs carry the same names as a unidirectional model's, so a streaming model can start
    from an offline one. A lookahead convolution of another context takes the taps both have (the
    current frame and the next ones; zeros beyond), so that a model with a longer lookahead starts as
    ``source``; one that ``source`` lacks starts as the identity (each frame passes itself on), so
    that the new model starts as the forward half of ``source``.
    """
    target = model.state_dict()  # detached tensors that share the parameters' storage: copies land in the model
    copied, fresh = [], []
    for name, tensor in target.items():
        theirs = source.state_dict.get(name)
        usable = theirs is not None and theirs.shape == tensor.shape and (same_labels or not name.startswith("head."))
        if usable:
            tensor.copy_(theirs.to(tensor.dtype))
            copied.append(name)
        else:
            fresh.append(name)
    if not any(target[name].is_floating_point() for name in copied):
        raise CheckpointError(f"{source.path}: no weight matches this model by name and shape; nothing to start from")
    if "lookahead.conv.weight" in fresh:
        weight, theirs = target["lookahead.conv.weight"], source.state_dict.get("lookahead.conv.weight")
        weight.zero_()
        if theirs is not None and theirs.shape[:2] == weight.shape[:2]:  # (hidden, 1, context)
            taps = min(theirs.shape[2], weight.shape[2])
            weight[:, :, :taps] = theirs[:, :, :taps].to(weight.dtype)
            fresh.remove("lookahead.conv.weight")
            copied.append(f"lookahead.conv.weight[:, :, :{taps}]")
        else:
            weight[:, :, 0] = 1.0
    return copied, fresh


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


CHECKPOINT_GLOBS = ("deepspeech_last.pth", "deepspeech_checkpoint_epoch_*_iter_*.pth", "deepspeech_[0-9]*.pth")


def find_resumable(folder: Path) -> Path | None:
    """The newest checkpoint in ``folder`` that holds a training state to resume from
    (``--continue-from auto``), or None. Newest by modification time; on a tie
    deepspeech_last.pth wins. Files that do not load (a copy cut short) are passed over."""
    seen: dict[Path, tuple[int, int]] = {}
    for rank, pattern in enumerate(CHECKPOINT_GLOBS):
        for path in folder.glob(pattern):
            if path.is_file() and path not in seen:
                seen[path] = (path.stat().st_mtime_ns, -rank)
    for path in sorted(seen, key=seen.get, reverse=True):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            log.warning("--continue-from auto: passing over %s (%s)", path, e)
            continue
        if ckpt.training is not None and ckpt.training.resumable:
            return path
    return None


def weights_digest(model: nn.Module, buffers: bool = False) -> str:
    """SHA-256 over the names and bytes of a model's parameters (unwrapped from DDP), or with
    ``buffers`` of its buffers (BatchNorm running statistics: under DDP each rank updates
    them from its own batches, and rank 0's are the ones saved)."""
    h = hashlib.sha256()
    bare = unwrap_model(model)
    tensors = bare.named_buffers() if buffers else bare.named_parameters()
    for k, v in sorted(tensors):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """A LambdaLR over training batches, so its state is one integer and resume is exact."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_steps
    if cfg.lr_schedule == "onecycle" and warmup == 0:
        warmup = max(1, int(0.1 * total))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.lr_schedule == "anneal":
            return cfg.learning_anneal ** -(step // max(1, steps_per_epoch))
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def feature_stats(dataset: SpectrogramDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency mean and standard deviation of ``dataset``'s features over all frames
    (its config must not normalise; no augmentation)."""
    total = sq = None
    n = 0
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, tuple):  # an utterance whose audio cannot be decoded
            continue
        spect = item[0].double()
        total = spect.sum(1) if total is None else total + spect.sum(1)
        sq = (spect**2).sum(1) if sq is None else sq + (spect**2).sum(1)
        n += spect.shape[1]
    if n == 0:
        raise ManifestError(f"{dataset.manifest_path}: no decodable utterance to measure feature statistics on")
    mean = total / n
    std = (sq / n - mean**2).clamp_min(0).sqrt()
    return mean.numpy(), std.numpy()


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


def init_process_group_bounded(backend: str, timeout_s: float, rank: int, world_size: int) -> None:
    """``dist.init_process_group`` for torchrun workers, safe across elastic restarts.

    torchrun's c10d rendezvous (torch 2.13) hands every attempt's workers the same shared TCPStore
    without a per-attempt prefix, so after a restart a rank can read the address its peer published
    in the previous attempt: gloo's full-mesh connect is then refused, or both ranks wait for each
    other forever, past gloo's own timeout. Keys here are prefixed with torchrun's restart count, and
    a rank that is not connected within ``timeout_s`` (+5 s) exits with status 1 and a message, so
    that ``--max-restarts`` starts the group again instead of the run hanging.
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs = {}
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
        )
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        kwargs = {"store": dist.PrefixStore(f"deepspeech/attempt_{attempt}", store), "rank": rank, "world_size": world_size}

    def give_up() -> None:
        sys.stderr.write(
            f"train.py: rank {rank} could not connect to the other ranks within --dist-timeout {timeout_s:g} s "
            f"(store {os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}); exiting so that "
            "torchrun can restart the group. Check that every node runs the same command and can reach that address.\n"
        )
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(timeout_s + 5.0, give_up)
    timer.daemon = True
    timer.start()
    try:
        dist.init_process_group(backend, timeout=timeout, **kwargs)
    finally:
        timer.cancel()


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
            init_process_group_bounded(
                "nccl" if self.device.type == "cuda" else "gloo", args.dist_timeout, self.rank, self.world_size
            )
        self.optim_cfg = OptimConfig.from_args(args)
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
        resume: Checkpoint | None = None
        self.resumed_from = self._resume_source()
        if self.resumed_from is not None:
            model, resume = self._load_resume()
            if not args.finetune and (resume.training is None or not resume.training.resumable):
                raise CheckpointError(
                    f"{self.resumed_from}: holds a model but no training state; "
                    "use --finetune to start a new run from its weights"
                )
            self.audio_cfg = resume.audio_config
            self.labels = list(resume.labels)
            self._warn_overridden(resume)
        else:
            self.audio_cfg = AudioConfig.from_args(args)
            self.labels = load_labels(args.labels_path)

            if args.level_norm:
                wavs = [row.wav for row in read_manifest(args.train_manifest)]
                try:  # unreadable files are skipped, as training skips them
                    level = median_speech_level_db(wavs, self.audio_cfg.sample_rate, skip_unreadable=True)
                except ValueError:
                    raise ManifestError(f"{args.train_manifest}: no readable audio to measure the speech level on") from None
                self.audio_cfg = replace(self.audio_cfg, level_db=round(level, 2))
                self.info("speech level %.2f dBFS measured on the training utterances", self.audio_cfg.level_db)
            if args.normalize == "global":
                stats_set = SpectrogramDataset(
                    args.train_manifest,
                    self.audio_cfg,
                    self.labels,
                    on_error="skip",
                    cache_audio=False,
                    lazy_transcripts=args.lazy_transcripts,
                )
                self.audio_cfg = with_feature_stats(self.audio_cfg, *feature_stats(stats_set))
                self.info("feature statistics measured on %d training utterances", len(stats_set))
            cfg = ModelConfig.from_args(args, self.audio_cfg.n_freq, len(self.labels))
            model = build_model(cfg)
            if args.init_from and self.is_main:  # DDP sends rank 0's weights to the other ranks
                source = load_checkpoint(args.init_from)
                copied, fresh = init_from(model, source, same_labels=list(source.labels) == self.labels)
                self.info(
                    "%d of %d tensors taken from %s; fresh: %s",
                    len(copied),
                    len(copied) + len(fresh),
                    args.init_from,
                    ", ".join(fresh) or "none",
                )
            model = model.to(self.device)

        resolve_word_alignments(args)  # done by check_args already when run from the command line
        augment = resolve_augment_warmup(args)
        data_kw = dict(
            on_error="skip",
            lazy_transcripts=args.lazy_transcripts,
            cache_bytes=None if args.cache_mb is None else int(args.cache_mb * 2**20),
        )
        self.train_set = SpectrogramDataset(
            args.train_manifest,
            self.audio_cfg,
            self.labels,
            augment=augment,
            seed=args.seed,
            single_word_repeats=args.single_word_repeats,
            **data_kw,
        )
        self.val_set = SpectrogramDataset(args.val_manifest, self.audio_cfg, self.labels, **data_kw)
        order_kw = dict(shuffle=not args.no_shuffle, sortagrad=not args.no_sorta_grad, seed=args.seed)
        rank_kw = dict(num_replicas=self.world_size, rank=self.rank)
        if args.batch_frames:
            self.sampler = (
                DistributedFrameBatchSampler(self.train_set, args.batch_frames, **order_kw, **rank_kw)
                if self.distributed
                else FrameBatchSampler(self.train_set, args.batch_frames, **order_kw)
            )
            val_sampler = FrameBatchSampler(self.val_set, args.batch_frames, shuffle=False)
        else:
            self.sampler = (
                DistributedBucketingSampler(self.train_set, args.batch_size, **order_kw, **rank_kw)
                if self.distributed
                else BucketingSampler(self.train_set, args.batch_size, **order_kw)
            )
            val_sampler = BucketingSampler(len(self.val_set), batch_size=max(args.batch_size, 16), shuffle=False)
        self.train_loader = AudioDataLoader(self.train_set, batch_sampler=self.sampler, num_workers=args.num_workers)
        self.val_loader = AudioDataLoader(self.val_set, batch_sampler=val_sampler, num_workers=args.num_workers)
        self.steps_per_epoch = len(self.sampler)

        self.attach_model(model)
        self.scheduler = make_scheduler(self.optimizer, self.optim_cfg, self.steps_per_epoch)
        self.decoder = GreedyDecoder(self.labels)

        self.epoch = 0  # epochs completed
        self.step = 0
        self.history = empty_history()
        self.best_wer = math.inf
        self.best_state_dict: dict | None = None
        if resume is not None and not args.finetune:
            self._restore(resume.training)
        if self.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None
            )

        self.tb = TensorBoardLogger(args.log_dir, args.id) if args.tensorboard and self.is_main else None
        self.viz = (
            VisdomLogger(args.id, server=args.visdom_server, port=args.visdom_port) if args.visdom and self.is_main else None
        )
        if self.history["epoch"]:
            for logger in (self.tb, self.viz):
                if logger is not None:
                    logger.log_history(self.history)

    def _resume_source(self) -> Path | None:
        """The checkpoint to start from: --continue-from, or with 'auto' the newest resumable one
        in --save-folder (None: a fresh start). Under DDP rank 0 decides for every rank."""
        given = self.args.continue_from
        if not given:
            return None
        path: Path | None = Path(given)
        if given == "auto":
            path = find_resumable(self.save_folder) if self.is_main else None
            if self.is_main:
                if path is None:
                    self.info("--continue-from auto: no resumable checkpoint in %s, starting fresh", self.save_folder)
                else:
                    self.info("--continue-from auto: resuming from %s", path)
        if self.distributed:
            chosen = [str(path) if path is not None else None]
            dist.broadcast_object_list(chosen, src=0)
            path = Path(chosen[0]) if chosen[0] is not None else None
        return path

    def _load_resume(self) -> tuple[nn.Module, Checkpoint]:
        """Load the checkpoint to resume from. Under DDP rank 0 reads the file and sends its
        bytes to the other ranks, so the checkpoint need exist on the first node only."""
        if not self.distributed:
            return load_model(self.resumed_from, self.device)
        payload = [self.resumed_from.read_bytes() if self.is_main else None]
        dist.broadcast_object_list(payload, src=0)
        if self.is_main:
            return load_model(self.resumed_from, self.device)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / self.resumed_from.name
            local.write_bytes(payload[0])
            model, ckpt = load_model(local, self.device)
        ckpt.path = self.resumed_from
        return model, ckpt

    def attach_model(self, model: nn.Module) -> None:
        """Take ``model`` (on this trainer's device) with a fresh optimizer, gradient scaler and
        skip counters: everything :meth:`train_step` needs."""
        self.model = model
        self.optimizer = make_optimizer(self.optim_cfg, model.parameters())
        self.use_scaler = self.args.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.counters = {"skipped_nonfinite": 0, "skipped_too_short": 0, "skipped_unreadable": 0}

    def _warn_overridden(self, ckpt: Checkpoint) -> None:
        given = {k: getattr(self.args, k) for k in ARCH_FLAGS + AUDIO_FLAGS}
        stored = {**asdict(ckpt.model_config), **ckpt.audio_config.to_dict()}
        defaults = vars(build_parser().parse_args([]))
        differ = [k for k, v in given.items() if k in stored and stored[k] != v and v != defaults[k]]
        if self.args.level_norm and ckpt.audio_config.level_db is None:
            differ.append("level_norm")
        if differ:
            log.warning(
                "--continue-from: the architecture and audio come from %s; ignoring %s",
                self.resumed_from,
                ", ".join(flag(k) for k in differ),
            )

    def _restore(self, state: TrainingState) -> None:
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler and self.use_scaler:
            self.scaler.load_state_dict(state.scaler)
        try:
            self.sampler.load_state_dict(state.sampler)
        except ValueError:
            # batch size or process count changed: the interrupted epoch restarts from its beginning
            log.warning(
                "--continue-from: batches per epoch changed; epoch %d restarts from its first batch", state.sampler["epoch"] + 1
            )
            self.sampler.load_state_dict({**state.sampler, "batches_done": 0, "n_batches": len(self.sampler)})
        self.epoch = state.epoch
        self.step = state.step
        self.history = {k: list(v) for k, v in state.history.items()}
        self.best_wer = state.best_wer if state.best_wer is not None else math.inf
        self.best_state_dict = state.best_state_dict
        self.counters.update(state.counters)
        set_rng_state(state.rng)
        self.info("resumed from %s: %d epochs done, step %d", self.resumed_from, self.epoch, self.step)

    # -- checkpoints ------------------------------------------------------------------

    def training_state(self, resumable: bool) -> TrainingState:
        state = TrainingState(
            epoch=self.epoch,
            step=self.step,
            history=self.history,
            best_wer=self.best_wer if math.isfinite(self.best_wer) else None,
            counters=dict(self.counters),
            args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
        )
        if resumable:
            state.optimizer = self.optimizer.state_dict()
            state.scheduler = self.scheduler.state_dict()
            state.scaler = self.scaler.state_dict() if self.use_scaler else None
            state.sampler = self.sampler.state_dict()
            state.rng = rng_state()
            state.best_state_dict = self.best_state_dict
        return state

    def save(self, path: Path, resumable: bool = True) -> None:
        if not self.is_main:
            return
        ckpt = Checkpoint.from_model(self.model, self.audio_cfg, self.labels, self.training_state(resumable))
        save_checkpoint(path, ckpt)

    def save_best_model(self) -> None:
        """Write the best weights so far to --model-path (without the state to resume)."""
        if not self.is_main or self.best_state_dict is None:
            return
        bare = unwrap_model(self.model)
        ckpt = Checkpoint(bare.cfg, self.audio_cfg, self.labels, self.best_state_dict, self.training_state(False))
        save_checkpoint(self.args.model_path, ckpt)

    # -- loop ---------------------------------------------------------------------------

    def train_step(self, batch) -> float | None:
        """One optimizer step; returns the loss per utterance, or None if the step was skipped.

        Utterances too short for their transcript are dropped from the loss and counted; a
        non-finite loss or gradient skips the whole step and is counted. Under DDP every rank
        still runs backward (with a zero loss) so the gradient all-reduce never deadlocks.
        """
        if not batch.paths:  # every utterance of the batch was unreadable
            if not self.distributed:
                return None
            # DDP: take part in the gradient all-reduce with a zero loss on a dummy input
            n_freq = unwrap_model(self.model).cfg.n_features
            batch = batch._replace(
                inputs=torch.zeros(1, 1, n_freq, 64),
                input_lengths=torch.tensor([64]),
                targets=torch.zeros(0, dtype=torch.long),
                target_lengths=torch.zeros(1, dtype=torch.long),
            )
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
        n_ok = int(ok.sum()) if batch.paths else 0
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
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.max_norm)
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
            self.info(
                "skipped at load: %d training and %d validation utterances (see warnings above)",
                len(self.train_set.skipped),
                len(self.val_set.skipped),
            )
        stopped_early = False
        with GracefulStop() as stop:
            while self.epoch < args.epochs:
                epoch_loss, n_steps = self._train_epoch(stop)
                if stop.requested:
                    self.save(self.last_path)
                    self.info(
                        "stopped in epoch %d at step %d; resume with --continue-from %s",
                        self.epoch + 1,
                        self.step,
                        self.last_path,
                    )
                    stopped_early = True
                    break
                self.epoch += 1
                self._end_epoch(epoch_loss / max(1, n_steps))
                if args.stop_after_epoch is not None and self.epoch >= args.stop_after_epoch:
                    stopped_early = self.epoch < args.epochs
                    break
        # --model-path may be new on this run (resumed with another path) and no epoch of this
        # run may have improved: write the best model there from the state carried along.
        if self.history["epoch"]:
            self.save_best_model()
        if self.tb is not None:
            self.tb.close()
        digest_dir = os.environ.get("DEEPSPEECH_WEIGHTS_DIGEST_DIR")
        if digest_dir:  # for checking that every rank ends with the same weights
            Path(digest_dir).mkdir(parents=True, exist_ok=True)
            (Path(digest_dir) / f"rank{self.rank}.json").write_text(
                json.dumps(
                    {
                        "rank": self.rank,
                        "world_size": self.world_size,
                        "epoch": self.epoch,
                        "step": self.step,
                        "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                        "save_folder": str(self.save_folder.resolve()),
                        "sha256": weights_digest(self.model),
                        "buffers_sha256": weights_digest(self.model, True),
                    }
                )
            )
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
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        total, n_steps, utts, audio_s = 0.0, 0, 0, 0.0
        start = time.perf_counter()
        bar = Progress(
            total=len(self.sampler),
            initial=self.sampler.batches_done,
            desc=f"epoch {self.epoch + 1}",
            disable=self.args.silent or not self.is_main,
            unit="batches",
        )
        for batch in self.train_loader:
            for item in batch.skipped:
                self.counters["skipped_unreadable"] += 1
                log.warning("skipping %s", item.reason)
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
            bar.set_postfix(loss=f"{total / max(1, n_steps):.2f}", utt_s=f"{utts / elapsed:.1f}", x_rt=f"{audio_s / elapsed:.1f}")
            bar.update()
            per_batch = self.args.checkpoint_per_batch
            if per_batch and self.sampler.batches_done % per_batch == 0:
                self.save(self.save_folder / f"deepspeech_checkpoint_epoch_{self.epoch + 1}_iter_{self.sampler.batches_done}.pth")
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
            for k, v in zip(
                ("epoch", "train_loss", "val_loss", "wer", "cer", "lr"),
                (self.epoch, train_loss, result.loss, result.wer, result.cer, lr),
            ):
                self.history[k].append(v)
            improved = result.wer < self.best_wer
            if improved:
                self.best_wer = result.wer
                self.best_state_dict = {
                    k: v.detach().to("cpu", copy=True) for k, v in unwrap_model(self.model).state_dict().items()
                }
            skipped = sum(self.counters.values())
            self.info(
                "epoch %d/%d  train loss %.3f  val loss %.3f  WER %.2f  CER %.2f  lr %.2e  %.0fs (%.1fx realtime)%s%s",
                self.epoch,
                args.epochs,
                train_loss,
                result.loss,
                result.wer,
                result.cer,
                lr,
                self.epoch_time,
                self.epoch_audio_s / max(self.epoch_time, 1e-9),
                "  *best*" if improved else "",
                f"  skipped {self.counters}" if skipped else "",
            )
            if improved:
                self.save_best_model()
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
            "audio": {k: v for k, v in self.audio_cfg.to_dict().items() if k not in ("feature_mean", "feature_std")},
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
    if args.batch_frames is not None:
        if args.batch_size != parser.get_default("batch_size"):
            parser.error("--batch-frames sets the batches by padded frames; drop --batch-size")
        if args.batch_frames < 1:
            parser.error("--batch-frames must be at least 1")
    elif args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.cache_mb is not None and args.cache_mb < 0:
        parser.error("--cache-mb must be >= 0 (0: no cache)")
    if args.single_word_repeats < 1:
        parser.error("--single-word-repeats must be at least 1 (1: every utterance once per epoch)")
    if args.single_word_repeats > 1 and args.lazy_transcripts:
        parser.error("--single-word-repeats reads every transcript at start: drop --lazy-transcripts")
    if args.init_from and args.continue_from and args.continue_from != "auto":
        parser.error("--init-from starts a new run; --continue-from resumes one: give one of them")
    if args.init_from and not Path(args.init_from).is_file() and int(os.environ.get("RANK", "0")) == 0:
        parser.error(f"--init-from {args.init_from}: no such file")
    if args.continue_from == "auto" and args.finetune:
        parser.error("--finetune takes the weights of a given model; give its path, not --continue-from auto")
    OptimConfig.check_args(parser, args)
    ModelConfig.check_args(parser, args)
    for name, needs in (("visdom_server", "visdom"), ("visdom_port", "visdom"), ("log_dir", "tensorboard")):
        if getattr(args, name) != parser.get_default(name) and not getattr(args, needs):
            parser.error(f"{flag(name)} applies with {flag(needs)} only")
    if args.stop_after_epoch is not None and args.stop_after_epoch < 1:
        parser.error("--stop-after-epoch must be at least 1")
    if args.dist_timeout <= 0:
        parser.error("--dist-timeout must be > 0 seconds")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.num_workers < 0 or args.checkpoint_per_batch < 0:
        parser.error("--num-workers and --checkpoint-per-batch must be >= 0")
    resolve_word_alignments(args)
    resolve_augment_warmup(args, parser)  # refuses invalid augmentation flags and ones that would do nothing
    # Under DDP only rank 0 reads the checkpoint (and sends it), so other nodes need not have it.
    if (
        args.continue_from
        and args.continue_from != "auto"
        and int(os.environ.get("RANK", "0")) == 0
        and not Path(args.continue_from).is_file()
    ):
        parser.error(f"--continue-from {args.continue_from}: file not found")
    for name in ("train_manifest", "val_manifest"):
        if not Path(getattr(args, name)).is_file():
            parser.error(
                f"{flag(name)} {getattr(args, name)}: manifest not found "
                "(run `python data/an4.py` to prepare AN4, or build one with `python data/utils.py create`)"
            )


def resolve_word_alignments(args: argparse.Namespace) -> None:
    """The recipe's word crop without ``--word-alignments``: :data:`DEFAULT_WORD_ALIGNMENTS`
    when it aligns utterances of ``--train-manifest`` (AN4's training set), otherwise the
    crop is switched off and a warning says how to align the manifest. A crop that stays on
    without ``--[no-]word-crop-skip-letters`` takes :data:`RECIPE_WORD_CROP_SKIP_LETTERS`."""
    _resolve_alignments(args)
    if args.word_crop_prob > 0 and args.word_crop_skip_letters is None:
        args.word_crop_skip_letters = RECIPE_WORD_CROP_SKIP_LETTERS


def resolve_augment_warmup(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> AugmentConfig:
    """The run's :class:`AugmentConfig` (``parser`` refuses invalid flags, as in
    :meth:`AugmentConfig.from_args`). Without ``--augment-warmup-epochs``, ``args`` gets
    :data:`RECIPE_AUGMENT_WARMUP_EPOCHS` while any augmentation is on, 0 when every one is off."""
    cfg = AugmentConfig.from_args(args, parser)
    if args.augment_warmup_epochs is None:
        args.augment_warmup_epochs = RECIPE_AUGMENT_WARMUP_EPOCHS if cfg.enabled else 0
        cfg = replace(cfg, warmup_epochs=args.augment_warmup_epochs)
    return cfg


def _resolve_alignments(args: argparse.Namespace) -> None:
    if args.word_crop_prob <= 0 or args.word_alignments is not None:
        return
    default = Path(DEFAULT_WORD_ALIGNMENTS)
    covered = 0
    if default.is_file() and Path(args.train_manifest).is_file():
        try:
            covered = count_aligned(read_alignments(default), (row.wav for row in read_manifest(args.train_manifest)))
        except (AlignmentFileError, ManifestError):
            covered = 0
    if covered:
        args.word_alignments = str(default)
        return
    log.warning(
        "word crop off: %s has no word alignments of %s; to train with it, run "
        "python align.py --manifest %s --output FILE and pass --word-alignments FILE",
        default,
        args.train_manifest,
        args.train_manifest,
    )
    args.word_crop_prob = 0.0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.silent else logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    check_args(parser, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        trainer = Trainer(args)
        trainer.setup()
        result = trainer.run()
    except (CheckpointError, AudioError, ManifestError, TranscriptError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if trainer.is_main and not args.silent:
        best = result["best_wer"]
        if result["history"]["epoch"]:
            log.info(
                "done: %d epochs, best val WER %.2f, model %s, curves %s",
                result["epochs_done"],
                best,
                args.model_path,
                Path(args.save_folder) / "curves.png",
            )
        else:
            log.info(
                "done: no epoch finished, so no model was validated yet; resume with --continue-from %s (or auto)",
                trainer.last_path,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
