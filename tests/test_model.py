"""model.py: shapes, output lengths, padding invariance, masked BatchNorm, lookahead, FLOPs."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from model import (
    DS2_CONVS,
    BatchRNN,
    DeepSpeech1,
    DeepSpeech2,
    Lookahead,
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
    ModelConfig,
    build_model,
    count_parameters,
    forward_flops,
    reverse_index,
)
from utils import dataclass_from_dict

COMBOS = list(itertools.product(["ds2", "ds1"], [True, False], ["rnn", "gru", "lstm"]))
COMBO_IDS = [f"{a}-{'bi' if b else 'uni'}-{r}" for a, b, r in COMBOS]


def tiny_cfg(arch: str = "ds2", bidirectional: bool = True, rnn_type: str = "gru", **kw) -> ModelConfig:
    base = dict(
        arch=arch,
        n_features=161 if arch == "ds2" else 20,
        hidden_size=8,
        hidden_layers=2,
        rnn_type=rnn_type,
        bidirectional=bidirectional,
        conv_channels=4,
        conv_time_stride=2,
        lookahead_context=3,
        ds1_context=2,
    )
    base.update(kw)
    return ModelConfig(**base)


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running stats and affine parameters, so eval-mode BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def padded_batch(utterances: list[torch.Tensor], max_frames: int, pad_value: str = "noise") -> torch.Tensor:
    """(F, T_i) tensors -> (B, 1, F, max_frames), padding filled with noise (the model must mask it) or zeros."""
    n_features = utterances[0].size(0)
    out = torch.zeros(len(utterances), 1, n_features, max_frames)
    if pad_value == "noise":
        out.normal_(0, 5.0)
    for i, u in enumerate(utterances):
        out[i, 0, :, : u.size(1)] = u
    return out


# ---------------------------------------------------------------------------- shapes and lengths


@pytest.mark.parametrize("arch,bidirectional,rnn_type", COMBOS, ids=COMBO_IDS)
def test_shapes_and_output_lengths(arch: str, bidirectional: bool, rnn_type: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(arch, bidirectional, rnn_type)
    model = build_model(cfg).eval()
    lengths = torch.tensor([41, 30, 1])
    x = padded_batch([torch.randn(cfg.n_features, int(n)) for n in lengths], 41, pad_value="zeros")
    with torch.no_grad():
        log_probs, out_lengths = model(x, lengths)
    assert log_probs.shape == (3, model.output_lengths(41), cfg.n_classes)
    assert log_probs.dtype == torch.float32 and log_probs.is_contiguous()
    assert torch.equal(out_lengths, model.output_lengths(lengths))
    assert out_lengths.dtype == torch.long
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, log_probs.size(1)))
    expected = [(n + 1) // 2 for n in (41, 30, 1)] if arch == "ds2" else [41, 30, 1]
    assert out_lengths.tolist() == expected


@pytest.mark.parametrize("arch,stride", [("ds2", 2), ("ds2", 4), ("ds1", 1), ("ds1", 2)])
def test_output_lengths_match_actual_frames(arch: str, stride: int) -> None:
    """output_lengths(T) is exactly the number of frames the layers produce, for every T."""
    kw = dict(ds1_stride=stride) if arch == "ds1" else dict(conv_time_stride=stride)
    model = build_model(tiny_cfg(arch, hidden_layers=1, n_features=20, **kw)).eval()
    assert model.time_stride == stride
    with torch.no_grad():
        for t in range(1, 26):
            log_probs, out_lengths = model(torch.randn(1, 1, 20, t), torch.tensor([t]))
            assert log_probs.size(1) == model.output_lengths(t) == out_lengths.item() == -(-t // stride)


def test_ds2_sizes_follow_the_conv_constants() -> None:
    """161 features -> 41 bins x 32 channels = 1312 RNN inputs; parameter counts match
    deepspeech.pytorch's published configurations (minus its two redundant conv biases).
    The default front end has 16 channels (656 RNN inputs) and 40 ms output frames."""
    assert [c.kernel for c in DS2_CONVS] == [(41, 11), (21, 11)]
    theirs = dict(conv_channels=32, conv_time_stride=2)
    with torch.device("meta"):
        gru = build_model(ModelConfig(hidden_size=800, hidden_layers=5, rnn_type="gru", **theirs))
        lstm = build_model(ModelConfig(hidden_size=1024, hidden_layers=5, rnn_type="lstm", **theirs))
        default = build_model(ModelConfig())
    assert default.rnn_input_size == 656 and default.time_stride == 4
    assert gru.rnn_input_size == 1312 and gru.rnns[0].rnn.input_size == 1312
    assert round(count_parameters(gru) / 1e6, 1) == 41.2
    assert round(count_parameters(lstm) / 1e6, 1) == 86.6
    assert gru.rnns[0].batch_norm is None and all(r.batch_norm is not None for r in gru.rnns[1:])


def test_frame_shift() -> None:
    hop = 0.01  # seconds between input frames
    assert build_model(tiny_cfg("ds2")).frame_shift(hop) == pytest.approx(0.02)
    assert build_model(tiny_cfg("ds1")).frame_shift(hop) == pytest.approx(0.01)
    assert build_model(tiny_cfg("ds1", ds1_stride=2)).frame_shift(hop) == pytest.approx(0.02)
    assert build_model(tiny_cfg("ds2")).frame_shift(0.02) == pytest.approx(0.04)


def test_build_model_picks_the_architecture() -> None:
    assert isinstance(build_model(tiny_cfg("ds2")), DeepSpeech2)
    ds1 = build_model(tiny_cfg("ds1"))
    assert isinstance(ds1, DeepSpeech1)
    assert ds1.context.kernel_size == (5,)  # +-2 frames of context
    assert build_model(tiny_cfg("ds1")).cfg == tiny_cfg("ds1")


# ---------------------------------------------------------------------------- config


def test_config_is_plain_data_and_round_trips() -> None:
    cfg = tiny_cfg("ds1", dropout=0.1)
    d = asdict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert dataclass_from_dict(ModelConfig, d) == cfg
    assert ModelConfig(dropout=0).dropout == 0.0


@pytest.mark.parametrize(
    "field,value",
    [
        ("arch", "ds3"),
        ("rnn_type", "transformer"),
        ("hidden_size", 0),
        ("hidden_layers", 0),
        ("hidden_size", 8.0),
        ("n_classes", 1),
        ("conv_channels", True),
        ("bidirectional", 1),
        ("lookahead_context", 0),
        ("ds1_context", -1),
        ("ds1_stride", 3),
        ("conv_time_stride", 3),
        ("conv_time_stride", 4.0),
        ("dropout", 1.0),
        ("dropout", "0.1"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown ModelConfig fields.*nb_layers"):
        dataclass_from_dict(ModelConfig, {**asdict(ModelConfig()), "nb_layers": 5})


# ---------------------------------------------------------------------------- padding


def assert_padding_invariant(cfg: ModelConfig) -> None:
    torch.manual_seed(1)
    model = build_model(cfg)
    randomize_batch_norms(model)
    model.eval()
    short, long = torch.randn(cfg.n_features, 37), torch.randn(cfg.n_features, 80)
    with torch.no_grad():
        alone, n_alone = model(short[None, None], torch.tensor([37]))
        long_alone, _ = model(long[None, None], torch.tensor([80]))
        batch, n_batch = model(padded_batch([long, short], 95), torch.tensor([80, 37]))
    n = n_alone.item()
    assert n_batch.tolist() == [model.output_lengths(80), n]
    torch.testing.assert_close(batch[1, :n], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[0, : n_batch[0]], long_alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,bidirectional,rnn_type", COMBOS, ids=COMBO_IDS)
def test_padding_does_not_change_outputs_in_eval(arch: str, bidirectional: bool, rnn_type: str) -> None:
    """One utterance alone gives the same log-probs as inside a batch padded (with noise)
    to a longer utterance: the conv masking, the within-length reversal and the
    lookahead masking keep padding out of every valid frame."""
    assert_padding_invariant(tiny_cfg(arch, bidirectional, rnn_type))


def test_padding_does_not_change_outputs_ds1_stride_2() -> None:
    assert_padding_invariant(tiny_cfg("ds1", True, "lstm", ds1_stride=2))


@pytest.mark.parametrize("arch,bidirectional", [("ds2", True), ("ds2", False), ("ds1", True)])
def test_training_gradients_do_not_depend_on_padding(arch: str, bidirectional: bool) -> None:
    """In train mode BatchNorm statistics come from valid frames only, so the CTC loss,
    its gradients and the updated running stats are the same with more padding."""
    torch.manual_seed(2)
    cfg = tiny_cfg(arch, bidirectional, "lstm", n_features=40)
    reference = build_model(cfg)
    utterances = [torch.randn(40, 60), torch.randn(40, 45)]
    lengths = torch.tensor([60, 45])
    targets, target_lengths = torch.randint(1, 29, (6,)), torch.tensor([3, 3])
    results = []
    for max_frames in (60, 83):
        model = build_model(cfg)
        model.load_state_dict(reference.state_dict())
        model.train()
        log_probs, out_lengths = model(padded_batch(utterances, max_frames), lengths)
        loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((loss.detach(), grads, model.state_dict()))
    (loss_a, grads_a, state_a), (loss_b, grads_b, state_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-3, atol=1e-5, msg=name)
    for name in state_a:
        torch.testing.assert_close(state_a[name], state_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_reverse_index_reverses_within_each_length() -> None:
    lengths = torch.tensor([3, 1, 4])
    x = torch.arange(4)[:, None].expand(4, 3)[:, :, None].float()  # (T=4, B=3, 1): value = time step
    flat = x.reshape(-1, 1).index_select(0, reverse_index(lengths, 4)).view(4, 3)
    assert flat.t().tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert torch.equal(reverse_index(lengths, 4)[reverse_index(lengths, 4)], torch.arange(12))


# ---------------------------------------------------------------------------- masked BatchNorm


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_1d_uses_valid_frames_only(momentum: float | None) -> None:
    torch.manual_seed(3)
    masked, plain = MaskedBatchNorm1d(6, momentum=momentum), nn.BatchNorm1d(6, momentum=momentum)
    with torch.no_grad():
        masked.weight.normal_(), masked.bias.normal_()
    plain.load_state_dict(masked.state_dict())
    lengths = torch.tensor([7, 3, 5])
    mask = torch.arange(7)[:, None] < lengths[None, :]  # (T, B)
    for _ in range(2):
        x = (torch.randn(7, 3, 6) * 3 + 1).requires_grad_()
        x.data[~mask] = 1e3  # padding garbage that would wreck the statistics
        y = masked(x, mask)
        x_valid = x.detach()[mask].requires_grad_()  # (N, 6)
        y_ref = plain(x_valid)
        torch.testing.assert_close(y[mask], y_ref, rtol=1e-5, atol=1e-5)
        weights = torch.randn_like(y_ref)
        (y[mask] * weights).sum().backward()
        (y_ref * weights).sum().backward()
        torch.testing.assert_close(x.grad[mask], x_valid.grad, rtol=1e-4, atol=1e-5)
        assert (x.grad[~mask] == 0).all()
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(masked.state_dict()[name], value, msg=name)
    # Eval mode: a per-element affine map, identical to nn.BatchNorm1d.
    masked.eval(), plain.eval()
    x = torch.randn(7, 3, 6)
    torch.testing.assert_close(masked(x, mask), plain(x.reshape(-1, 6)).view(7, 3, 6))


def test_masked_batch_norm_2d_uses_valid_frames_only() -> None:
    torch.manual_seed(4)
    masked, plain = MaskedBatchNorm2d(3), nn.BatchNorm2d(3)
    lengths = torch.tensor([9, 4])
    mask = torch.arange(9)[None, :] < lengths[:, None]  # (B, T)
    x = torch.randn(2, 3, 5, 9) * 2 + 0.5
    x = x.masked_fill(~mask[:, None, None, :], -7.0)
    y = masked(x, mask)
    valid = x.permute(0, 3, 1, 2)[mask]  # (N frames, C, F)
    y_ref = plain(valid[..., None])[..., 0]  # BatchNorm2d over (N, C, F, 1)
    torch.testing.assert_close(y.permute(0, 3, 1, 2)[mask], y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)


# ---------------------------------------------------------------------------- lookahead


def test_lookahead_is_a_masked_row_convolution() -> None:
    torch.manual_seed(5)
    layer = Lookahead(n_features=3, context=4)
    assert layer.conv.weight.shape == (3, 1, 4)
    x = torch.randn(10, 2, 3) * 5  # (T, B, H)
    lengths = torch.tensor([10, 6])
    mask = torch.arange(10)[:, None] < lengths[None, :]
    out = layer(x, mask)
    w = layer.conv.weight[:, 0, :]  # (H, context)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            expected = sum(w[:, k] * x[t + k, b] for k in range(4) if t + k < n)
            torch.testing.assert_close(out[t, b], expected.clamp(0, 20), rtol=1e-5, atol=1e-5)


def test_unidirectional_ds2_sees_exactly_its_lookahead() -> None:
    """Output frame u of a unidirectional DS2 depends on input frames up to
    2 * (u + context - 1) + 15 (convs: +5 conv2 frames, x2 stride, +5 conv1 frames) and no further."""
    torch.manual_seed(6)
    cfg = tiny_cfg(
        "ds2", bidirectional=False, rnn_type="gru", n_features=20, lookahead_context=3, conv_channels=8, hidden_size=16
    )
    model = build_model(cfg)
    assert build_model(tiny_cfg("ds2", bidirectional=True)).lookahead is None
    randomize_batch_norms(model)
    model.eval()
    x = torch.randn(1, 1, 20, 60)
    u = 5
    horizon = 2 * (u + cfg.lookahead_context - 1) + 15  # last input frame output u can see
    with torch.no_grad():
        base, _ = model(x, torch.tensor([60]))
        beyond = x.clone()
        beyond[..., horizon + 1 :] += 3.0 * torch.randn(20, 60 - horizon - 1)
        after, _ = model(beyond, torch.tensor([60]))
        at = x.clone()
        at[..., horizon] += 3.0 * torch.randn(20)
        moved, _ = model(at, torch.tensor([60]))
    torch.testing.assert_close(after[0, : u + 1], base[0, : u + 1])
    assert not torch.allclose(after[0, u + 1 :], base[0, u + 1 :])
    assert not torch.allclose(moved[0, u], base[0, u])


# ---------------------------------------------------------------------------- FLOPs


def test_forward_flops_by_hand() -> None:
    cfg = ModelConfig(hidden_size=16, hidden_layers=2, rnn_type="gru", conv_channels=32, conv_time_stride=2)
    conv1 = 2 * 32 * 81 * (1 * 41 * 11)  # 2.34 MFLOP per output frame
    conv2 = 2 * 32 * 41 * (32 * 21 * 11)  # 19.40 MFLOP
    rnn1 = 2 * (2 * 3 * (1312 * 16 + 16 * 16))  # 2 directions, 3 gates
    rnn2 = 2 * (2 * 3 * (16 * 16 + 16 * 16))
    head = 2 * 16 * 29
    assert forward_flops(cfg, 100) == 50 * (conv1 + conv2 + rnn1 + rnn2 + head)
    uni = replace(cfg, hidden_layers=1, rnn_type="lstm", bidirectional=False, lookahead_context=20)
    assert forward_flops(uni, 9) == 5 * (conv1 + conv2 + 2 * 4 * (1312 * 16 + 256) + 2 * 16 * 20 + head)
    with pytest.raises(ValueError):
        forward_flops(cfg, 0)


def _hooked_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds x 2 counted from the shapes each layer actually sees (one unpadded utterance)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups * torch.Size(module.kernel_size).numel()
            total += 2 * output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features
        elif isinstance(module, nn.RNNBase):
            gates = {"RNN_TANH": 1, "GRU": 3, "LSTM": 4}[module.mode]
            steps = inputs[0].size(0) * inputs[0].size(1)
            total += steps * 2 * gates * (module.input_size + module.hidden_size) * module.hidden_size

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x, torch.tensor([x.size(3)]))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize(
    "arch,bidirectional,rnn_type,stride",
    [
        ("ds2", True, "gru", 2),
        ("ds2", False, "lstm", 2),
        ("ds2", True, "lstm", 4),
        ("ds1", True, "rnn", 2),
        ("ds1", False, "gru", 1),
    ],
)
def test_forward_flops_matches_the_layers(arch: str, bidirectional: bool, rnn_type: str, stride: int) -> None:
    kw = dict(ds1_stride=stride) if arch == "ds1" else dict(conv_time_stride=stride)
    cfg = tiny_cfg(arch, bidirectional, rnn_type, **kw)
    model = build_model(cfg)
    assert forward_flops(cfg, 33) == _hooked_flops(model, torch.randn(1, 1, cfg.n_features, 33))


# ---------------------------------------------------------------------------- dropout and autocast


def test_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(7)
    for arch in ("ds2", "ds1"):
        model = build_model(tiny_cfg(arch, dropout=0.5))
        x, lengths = torch.randn(2, 1, model.cfg.n_features, 20), torch.tensor([20, 15])
        model.train()
        a, _ = model(x, lengths)
        b, _ = model(x, lengths)
        assert not torch.allclose(a, b)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x, lengths)[0], model(x, lengths)[0])


def test_bf16_autocast_forward_and_backward() -> None:
    torch.manual_seed(8)
    model = build_model(tiny_cfg("ds2", rnn_type="lstm")).train()
    x, lengths = torch.randn(2, 1, 161, 30), torch.tensor([30, 21])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, out_lengths = model(x, lengths)
    assert log_probs.dtype == torch.float32 and torch.isfinite(log_probs).all()
    loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.tensor([3, 4, 5, 6]), out_lengths, torch.tensor([2, 2]))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ["ds2", "ds1"])
def test_bad_inputs_raise_clear_errors(arch: str) -> None:
    model = build_model(tiny_cfg(arch)).eval()
    f = model.cfg.n_features
    with pytest.raises(ValueError, match=rf"shape \(B, 1, {f}, T\)"):
        model(torch.randn(2, f, 10), torch.tensor([10, 10]))
    with pytest.raises(ValueError, match=rf"shape \(B, 1, {f}, T\)"):
        model(torch.randn(2, 1, f + 1, 10), torch.tensor([10, 10]))
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\)"):
        model(torch.randn(2, 1, f, 10), torch.tensor([10]))
    for bad in ([0, 10], [11, 10]):
        with pytest.raises(ValueError, match="between 1 and T=10"):
            model(torch.randn(2, 1, f, 10), torch.tensor(bad))


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
def test_batch_rnn_equals_packed_bidirectional_rnn(rnn_type: str) -> None:
    """The padded two-RNN layer computes exactly what deepspeech.pytorch's packed
    bidirectional RNN (directions summed) computes, on every valid frame."""
    torch.manual_seed(9)
    layer = BatchRNN(6, 5, rnn_type, bidirectional=True, batch_norm=False)
    packed_rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[rnn_type](6, 5, bidirectional=True)
    with torch.no_grad():
        for name, value in layer.rnn.named_parameters():
            getattr(packed_rnn, name).copy_(value)
        for name, value in layer.rnn_reverse.named_parameters():
            getattr(packed_rnn, name + "_reverse").copy_(value)
    lengths = torch.tensor([9, 4, 7])
    x = torch.randn(9, 3, 6)  # (T, B, H)
    mask = torch.arange(9)[:, None] < lengths[None, :]
    ours = layer(x.masked_fill(~mask[:, :, None], 9.0), mask, reverse_index(lengths, 9))
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    reference, _ = nn.utils.rnn.pad_packed_sequence(packed_rnn(packed)[0], total_length=9)
    reference = reference.view(9, 3, 2, 5).sum(2)
    torch.testing.assert_close(ours[mask], reference[mask], rtol=1e-5, atol=1e-6)


def test_bench_runs_and_reports_json(capsys: pytest.CaptureFixture) -> None:
    from bench import bench_model

    argv = [
        "--hidden-sizes",
        "8",
        "--hidden-layers",
        "1",
        "--rnn-types",
        "gru",
        "--seconds",
        "0.3",
        "--batch-size",
        "2",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--bf16",
        "--ds1",
        "--threads",
        "1",
    ]
    threads = torch.get_num_threads()
    try:
        assert bench_model.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    rows = [(r["model"], r["impl"], r["lengths"], r["dtype"]) for r in report["results"]]
    assert rows == [
        ("ds2 1x8 bigru", "padded", "mixed", "fp32"),
        ("ds2 1x8 bigru", "packed", "mixed", "fp32"),
        ("ds2 1x8 bigru", "packed", "equal", "fp32"),
        ("ds2 1x8 bigru", "padded", "mixed", "bf16"),
        ("ds1 1x8 bigru", "padded", "mixed", "fp32"),
        ("ds1 1x8 bigru", "padded", "mixed", "bf16"),
    ]
    assert all(r["median_s"] > 0 and r["gflops"] > 0 for r in report["results"])
    assert report["max_frames"] == 30 and len(lines) == 3 + len(rows) + 1
    assert bench_model.main(["--runs", "0"]) == 2


def test_bench_quick_plan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """--quick times 3x512 GRU and LSTM, padded against packed, 3 runs each (steps stubbed out here)."""
    from bench import bench_model

    monkeypatch.setattr(bench_model, "train_step", lambda model, batch, bf16: 0.5)
    monkeypatch.setattr(bench_model, "matmul_gflops", lambda: 100.0)
    threads = torch.get_num_threads()
    try:
        assert bench_model.main(["--quick", "--threads", str(threads)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["model"], r["impl"]) for r in report["results"]] == [
        ("ds2 3x512 bigru", "padded"),
        ("ds2 3x512 bigru", "packed"),
        ("ds2 3x512 bilstm", "padded"),
        ("ds2 3x512 bilstm", "packed"),
    ]
    assert all(r["times_s"] == [0.5] * 3 for r in report["results"])


def test_channels_last_input_gives_the_same_output():
    from model import ModelConfig, build_model

    net = build_model(ModelConfig(hidden_size=8, hidden_layers=1, conv_channels=4)).eval()
    x, lengths = torch.randn(2, 1, 161, 40), torch.tensor([40, 25])
    with torch.no_grad():
        a, _ = net(x, lengths)
        b, _ = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), lengths)
    assert torch.allclose(a, b, atol=1e-5)


def test_bench_inference_runs(tmp_path, capsys):
    import importlib
    import json

    from checkpoint import Checkpoint, save_checkpoint
    from data.audio import AudioConfig
    from data.text import LABELS
    from model import ModelConfig, build_model

    path = tmp_path / "m.pth"
    model = build_model(ModelConfig(hidden_size=8, hidden_layers=1, conv_channels=4))
    save_checkpoint(path, Checkpoint.from_model(model, AudioConfig(), LABELS))
    bench = importlib.import_module("bench.bench_inference")
    assert bench.main(["--model-path", str(path), "--runs", "1", "--frames", "50", "--threads", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"fp32", "bf16 autocast", "channels-last", "conv_share"} <= last.keys()
    assert bench.main(["--model-path", str(path), "--runs", "1", "--frames", "50", "--threads", "1", "--front-ends"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(rows) == [
        f"{v}, {p}"
        for v in ("32 ch, stride 2", "16 ch, stride 2", "32 ch, stride 4", "16 ch, stride 4")
        for p in ("fp32", "bf16")
    ]
    assert all(rate > 0 for rate in rows.values())
    assert bench.main(["--model-path", str(tmp_path / "missing.pth")]) == 2
