"""train.py at scale: --batch-frames, --cache-mb, --lazy-transcripts, --continue-from auto, multi-node torchrun."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_train import TINY, load_flat, run_train

import train
from checkpoint import load_checkpoint
from data.data_loader import FrameBatchSampler
from model import build_model

NO_BATCH_SIZE = [a for a in TINY if a not in ("--batch-size", "3")]


def test_batch_frames_trains_with_frame_bounded_batches(tiny_dataset, tmp_path):
    args = train.build_parser().parse_args(
        [
            "--train-manifest",
            str(tiny_dataset),
            "--val-manifest",
            str(tiny_dataset),
            "--batch-frames",
            "200",
            "--cache-mb",
            "0",
            "--lazy-transcripts",
            *NO_BATCH_SIZE,
        ]
    )
    trainer = train.Trainer(args)
    trainer.setup()
    assert isinstance(trainer.sampler, FrameBatchSampler) and trainer.sampler.max_frames == 200
    assert all(trainer.sampler.padded_frames(b) <= 200 for b in trainer.sampler.bins)
    assert trainer.train_set.cache_bytes == 0 and trainer.train_set.lazy_transcripts
    out = tmp_path / "run"
    argv = ["--epochs", "2", "--batch-frames", "200", "--cache-mb", "0.5", "--lazy-transcripts"]
    assert (
        train.main(
            [
                "--train-manifest",
                str(tiny_dataset),
                "--val-manifest",
                str(tiny_dataset),
                "--save-folder",
                str(out),
                "--model-path",
                str(out / "best.pth"),
                *NO_BATCH_SIZE,
                *argv,
            ]
        )
        == 0
    )
    last = load_flat(out / "deepspeech_last.pth")
    assert last["epoch"] == 2 and last["sampler"]["n_batches"] == len(trainer.sampler)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--batch-frames", "500", "--batch-size", "4"], "drop --batch-size"),
        (["--batch-frames", "0"], "--batch-frames must be at least 1"),
        (["--cache-mb", "-1"], "--cache-mb must be >= 0"),
        (["--continue-from", "auto", "--finetune"], "not --continue-from auto"),
    ],
)
def test_nonsense_scale_flags_are_refused(tiny_dataset, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), *argv])
    assert message in capsys.readouterr().err


def test_continue_from_auto_starts_fresh_then_resumes_the_newest(tiny_dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    flags = ["--epochs", "3", "--batch-size", "2"]
    assert run_train(tiny_dataset, tmp_path / "a", *flags) == 0
    out = tmp_path / "b"
    assert run_train(tiny_dataset, out, *flags, "--stop-after-epoch", "1", "--continue-from", "auto") == 0
    assert load_flat(out / "deepspeech_last.pth")["epoch"] == 1
    assert train.find_resumable(out) == out / "deepspeech_last.pth"
    # a newer per-batch checkpoint wins over an older deepspeech_last.pth
    assert (
        run_train(tiny_dataset, out, *flags, "--continue-from", "auto", "--stop-after-epoch", "2", "--checkpoint-per-batch", "2")
        == 0
    )
    mid = out / "deepspeech_checkpoint_epoch_2_iter_2.pth"
    now = time.time()
    os.utime(out / "deepspeech_last.pth", (now - 60, now - 60))
    os.utime(mid, (now, now))
    assert train.find_resumable(out) == mid
    (out / "deepspeech_checkpoint_epoch_9_iter_9.pth").write_bytes(b"cut short")  # newest, but unloadable
    assert train.find_resumable(out) == mid
    (out / "best.pth").touch()  # not a resumable checkpoint name
    assert run_train(tiny_dataset, out, *flags, "--continue-from", "auto") == 0
    a, b = load_flat(tmp_path / "a" / "deepspeech_last.pth"), load_flat(out / "deepspeech_last.pth")
    assert b["epoch"] == 3
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert train.find_resumable(tmp_path / "empty") is None


# ---------------------------------------------------------------------------- 2 nodes x 1 process on torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodes:
    """Two torchrun agents on 127.0.0.1 as node 0 and node 1 (c10d rendezvous, gloo)."""

    def __init__(self, manifest: Path, tmp: Path) -> None:
        self.manifest, self.tmp = manifest, tmp
        # One restart is what the kill below needs; the spare ones absorb a restarted worker that
        # starts too slowly on a loaded machine for gloo's connection retries (about 7 s).
        self.max_restarts = 3
        self.flags = [
            "--epochs",
            "4",
            "--batch-size",
            "1",
            "--hidden-size",
            "8",
            "--hidden-layers",
            "1",
            "--conv-channels",
            "4",
            "--silent",
            "--threads",
            "1",
        ]

    def cmd(self, node: int, port: int, run_id: str, save: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--node-rank",
            str(node),
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            run_id,
            "--local-addr",
            "127.0.0.1",
            "--max-restarts",
            str(self.max_restarts),
            "--monitor-interval",
            "0.2",
            "--rdzv-conf",
            f"is_host={int(node == 0)},keep_alive_interval=1,keep_alive_max_attempt=2",
            str(REPO / "train.py"),
            "--train-manifest",
            str(self.manifest),
            "--val-manifest",
            str(self.manifest),
            "--save-folder",
            str(save),
            "--model-path",
            str(save / "best.pth"),
            *self.flags,
            *extra,
        ]

    def start(self, node: int, port: int, run_id: str, save: Path, digests: Path, *extra: str) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPSPEECH_WEIGHTS_DIGEST_DIR": str(digests)}
        log = open(self.tmp / f"{run_id}-node{node}.log", "ab")
        return subprocess.Popen(
            self.cmd(node, port, run_id, save, *extra),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self, name: str, saves: tuple[Path, Path], *extra: str) -> dict[int, dict]:
        port, digests = free_port(), self.tmp / f"digest-{name}"
        agents = [self.start(0, port, name, saves[0], digests, *extra)]
        time.sleep(0.5)  # node 0 hosts the rendezvous store
        agents.append(self.start(1, port, name, saves[1], digests, *extra))
        self.wait(agents, name)
        return read_digests(digests)

    def wait(self, agents: list[subprocess.Popen], name: str) -> None:
        try:
            for a in agents:
                assert a.wait(90) == 0, self.logs(name)
        finally:
            for a in agents:
                if a.poll() is None:
                    os.killpg(a.pid, signal.SIGKILL)

    def logs(self, name: str) -> str:
        return "\n".join(p.read_text(errors="replace")[-2500:] for p in sorted(self.tmp.glob(f"{name}-node*.log")))


def read_digests(folder: Path) -> dict[int, dict]:
    out = {}
    for path in folder.glob("rank*.json"):
        d = json.loads(path.read_text())
        out[d["rank"]] = d
    return out


def file_digest(path: Path, buffers: bool = False) -> str:
    model = build_model(load_checkpoint(path).model_config)
    model.load_state_dict(load_checkpoint(path).state_dict)
    return train.weights_digest(model, buffers)


@pytest.mark.slow
def test_two_nodes_on_torchrun_identical_weights_and_resume(tiny_dataset, tmp_path):
    """2 nodes x 1 process (c10d rendezvous on 127.0.0.1, gloo): the ranks end with identical
    weights, only rank 0 writes, and a stopped run resumes exactly with --continue-from auto."""
    nodes = TwoNodes(tiny_dataset, tmp_path)
    shared = tmp_path / "shared"
    # uninterrupted reference, one save folder seen by both nodes (a shared file system)
    ref = nodes.run("ref", (shared / "ref", shared / "ref"))
    assert set(ref) == {0, 1} and ref[0]["world_size"] == 2
    assert ref[0]["sha256"] == ref[1]["sha256"]
    assert file_digest(shared / "ref" / "deepspeech_last.pth") == ref[0]["sha256"]
    # BatchNorm running statistics are each rank's own; rank 0's are saved
    assert file_digest(shared / "ref" / "deepspeech_last.pth", buffers=True) == ref[0]["buffers_sha256"]
    assert load_flat(shared / "ref" / "deepspeech_last.pth")["epoch"] == 4

    # a stop after epoch 1 with a save folder per node: only rank 0's folder gets files
    a, b = tmp_path / "node0", tmp_path / "node1"
    first = nodes.run("stop", (a, b), "--stop-after-epoch", "1", "--continue-from", "auto")
    assert first[0]["sha256"] == first[1]["sha256"] and first[0]["resumed_from"] is None
    rank0_folder, rank1_folder = Path(first[0]["save_folder"]), Path(first[1]["save_folder"])
    assert {rank0_folder, rank1_folder} == {a.resolve(), b.resolve()}
    assert (rank0_folder / "deepspeech_last.pth").is_file()
    assert not rank1_folder.exists() or not any(rank1_folder.iterdir())
    assert file_digest(rank0_folder / "deepspeech_last.pth") == first[0]["sha256"]
    # resume with the same command line: exactly the uninterrupted run
    resumed = nodes.run("resume", (rank0_folder, rank0_folder), "--continue-from", "auto")
    assert resumed[0]["resumed_from"] == str(rank0_folder / "deepspeech_last.pth")
    assert resumed[0]["sha256"] == resumed[1]["sha256"] == ref[0]["sha256"]
    assert resumed[0]["buffers_sha256"] == ref[0]["buffers_sha256"]


def test_workers_of_each_restart_get_their_own_store_keys(monkeypatch):
    """torchrun's shared store outlives a restart; each attempt's keys get their own prefix."""
    port = free_port()
    server = torch.distributed.TCPStore("127.0.0.1", port, 1, is_master=True, wait_for_workers=False)
    seen = {}
    monkeypatch.setattr(train.dist, "init_process_group", lambda backend, **kw: seen.update(kw, backend=backend))
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for attempt in ("0", "2"):
        monkeypatch.setattr(os, "environ", {**os.environ, **env, "TORCHELASTIC_RESTART_COUNT": attempt})
        train.init_process_group_bounded("gloo", 5.0, 1, 2)
        assert seen["backend"] == "gloo" and seen["rank"] == 1 and seen["world_size"] == 2
        seen["store"].set("rank_1", f"address of attempt {attempt}")
    assert server.get("deepspeech/attempt_0/rank_1") == b"address of attempt 0"
    assert server.get("deepspeech/attempt_2/rank_1") == b"address of attempt 2"
    # outside torchrun's agent store, init_process_group reads the environment as usual
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_USE_AGENT_STORE"})
    seen.clear()
    train.init_process_group_bounded("gloo", 5.0, 0, 2)
    assert "store" not in seen and seen["timeout"].total_seconds() == 5.0


def test_a_rank_that_cannot_connect_exits_instead_of_hanging():
    code = (
        "import time, train\n"
        "train.dist.init_process_group = lambda *a, **k: time.sleep(600)\n"
        "train.init_process_group_bounded('gloo', 0.5, 3, 4)\n"
    )
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and time.monotonic() - t0 < 30
    assert "rank 3 could not connect to the other ranks within --dist-timeout 0.5 s" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_two_nodes_elastic_restart_after_a_worker_is_killed(tiny_dataset, tmp_path):
    """2 nodes x 1 process: after node 1's worker is SIGKILLed mid-run, torchrun --max-restarts
    reruns the same command line on both nodes, which continues from the last per-batch
    checkpoint (--continue-from auto) to the weights of a run that was never interrupted.

    Before train.init_process_group_bounded prefixed each attempt's store keys, this failed in
    about one run of three: a restarted rank read its peer's gloo address from the previous
    attempt and the two waited for each other until the test's timeout."""
    nodes = TwoNodes(tiny_dataset, tmp_path)
    shared = tmp_path / "shared"
    ref = nodes.run("ref", (shared / "ref", shared / "ref"))
    save = shared / "elastic"
    port, digests = free_port(), tmp_path / "digest-elastic"
    extra = ("--continue-from", "auto", "--checkpoint-per-batch", "1", "--dist-timeout", "20")
    agents = [nodes.start(0, port, "elastic", save, digests, *extra)]
    time.sleep(0.5)
    agents.append(nodes.start(1, port, "elastic", save, digests, *extra))
    deadline = time.time() + 60
    while time.time() < deadline and not list(save.glob("deepspeech_checkpoint_epoch_1_iter_2.pth")):
        assert agents[0].poll() is None, nodes.logs("elastic")
        time.sleep(0.01)
    # node 1's training process dies; its agent and node 0's restart both workers (--max-restarts)
    workers = [int(p) for p in Path(f"/proc/{agents[1].pid}/task/{agents[1].pid}/children").read_text().split()]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    nodes.wait(agents, "elastic")
    elastic = read_digests(digests)
    assert elastic[0]["resumed_from"] is not None, nodes.logs("elastic")  # the restart continued from a checkpoint
    assert elastic[0]["sha256"] == elastic[1]["sha256"] == ref[0]["sha256"]
    assert elastic[0]["buffers_sha256"] == ref[0]["buffers_sha256"]
