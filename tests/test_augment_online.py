"""Online augmentation (augment/online.py): the SNR of every mixed row is its draw, reverb follows
the RIR, the draws are keyed by (seed, rank, step, micro-batch), and a row left clean is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dasv_cli.augment.online import ONLINE_KINDS, SNR_DB, Plan, augment, parse_kinds, plan_batch
from dasv_cli.errors import UsageError
from dasv_cli.io.audio import load_audio

N = 32352  # a 200-frame window


def speech_batch(demo_files, rows: int = 8) -> torch.Tensor:
    waves = [load_audio(p) for p in demo_files[:rows]]
    return torch.from_numpy(np.stack([w[:N] for w in waves])) * 0.25  # headroom: nothing is limited


def snr_db(clean: torch.Tensor, mixed: torch.Tensor) -> np.ndarray:
    s = clean.double()
    d = mixed.double() - s
    return (10 * torch.log10((s * s).mean(1) / (d * d).mean(1))).numpy()


def test_each_mixed_row_has_its_drawn_snr(demo_files):
    x = speech_batch(demo_files)
    b = x.shape[0]
    rng = np.random.default_rng(5)
    noises = torch.from_numpy(rng.standard_normal((b, N)).astype(np.float32) * rng.uniform(0.01, 1, (b, 1)).astype(np.float32))
    valid = torch.full((b,), N)
    for name in ("noise", "music", "babble"):
        plan = plan_batch((name,), 1.0, b, {"noise": 3, "music": 3}, seed=1, rank=0, step=7, micro=1)
        assert (plan.kind == ONLINE_KINDS.index(name)).all()
        lo, hi = SNR_DB[name]
        assert ((plan.snr[:, 0] >= lo) & (plan.snr[:, 0] <= hi)).all()
        out = augment(x, plan, noises, torch.zeros(b, 1), valid)
        if name != "babble":
            np.testing.assert_allclose(snr_db(x, out), plan.snr[:, 0], atol=0.1)
        else:  # each talker at its own SNR (one talker a row: test_babble_talker_snr_one_at_a_time)
            assert ((plan.talkers >= 3) & (plan.talkers <= 7)).all()
            rows = np.arange(b)[:, None]
            assert (plan.source[:, :3] != rows).all()  # never the row itself
            assert not torch.equal(out, x)


def test_babble_talker_snr_one_at_a_time(demo_files):
    """One talker per row (talkers forced to 1): the mixed row's SNR is the talker's draw."""
    x = speech_batch(demo_files)
    b = x.shape[0]
    plan = plan_batch(("babble",), 1.0, b, {}, seed=3, rank=1, step=2, micro=0)
    plan.talkers[:] = 1
    out = augment(x, plan, None, torch.zeros(b, 1), torch.full((b,), N))
    np.testing.assert_allclose(snr_db(x, out), plan.snr[:, 0], atol=0.1)


def test_reverb_an_impulse_gives_the_rir_and_a_burst_decays_like_it():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    rir = (rng.standard_normal(4000) * np.exp(-t / 0.05)).astype(np.float32)  # RT60 ~ 0.35 s
    rir[:30] = 0
    rir[30] = 3.0  # the direct path, after 30 samples of travel
    plan = plan_batch(("reverb",), 1.0, 2, {"reverb": 1}, seed=0, rank=0, step=0, micro=0)
    impulse = torch.zeros(2, N)
    impulse[:, 100] = 0.5
    burst = torch.zeros(2, N)
    burst[1, :1600] = torch.from_numpy(rng.standard_normal(1600).astype(np.float32)) * 0.1
    x = torch.stack([impulse[0], burst[1]])
    out = augment(x, plan, None, torch.from_numpy(np.stack([rir, rir])), torch.full((2,), N))
    # an impulse at 100 gives the RIR from its direct path on, starting at 100, at the input's power
    expect = np.zeros(N)
    expect[100:100 + 4000 - 30] = rir[30:]
    expect *= np.sqrt(0.25 / N / ((expect ** 2).sum() / N))
    np.testing.assert_allclose(out[0].numpy(), expect, atol=1e-5)
    # the burst's tail after it stops decays as the RIR's envelope: 10 dB per ~58 ms (exp(-t/0.05))
    tail = out[1].double().numpy()[1600:1600 + 3200] ** 2
    energy = np.array([tail[i:i + 320].mean() for i in range(0, 3200, 320)])  # 20 ms blocks
    slope = np.polyfit(np.arange(energy.size) * 0.02, 10 * np.log10(energy), 1)[0]  # dB per second
    assert -220 < slope < -130, slope  # 2 / 0.05 s -> -173.7 dB/s for the energy envelope
    assert float(out[1, :1600].pow(2).mean()) > 0


def test_draws_are_keyed_and_no_draw_leaves_the_row_alone(demo_files):
    a = plan_batch(ONLINE_KINDS, 0.6, 32, {"noise": 5, "music": 4, "reverb": 3}, 1234, 0, 10, 1)
    same = plan_batch(ONLINE_KINDS, 0.6, 32, {"noise": 5, "music": 4, "reverb": 3}, 1234, 0, 10, 1)
    other = plan_batch(ONLINE_KINDS, 0.6, 32, {"noise": 5, "music": 4, "reverb": 3}, 1234, 0, 10, 2)
    np.testing.assert_array_equal(a.kind, same.kind)
    np.testing.assert_array_equal(a.snr, same.snr)
    assert not np.array_equal(a.kind, other.kind)
    assert 0.3 < (a.kind >= 0).mean() < 0.9 and (a.source[a.kind == 1, 0] < 5).all()
    state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    x = speech_batch(demo_files)
    plan = plan_batch(ONLINE_KINDS, 0.0, x.shape[0], {"noise": 1, "music": 1, "reverb": 1}, 1, 0, 0, 0)
    assert (plan.kind == -1).all()
    out = augment(x, plan, torch.zeros_like(x), torch.zeros(x.shape[0], 1), torch.full((x.shape[0],), N))
    assert torch.equal(out, x)
    assert np.array_equal(np.random.get_state()[1], state[0]) and torch.equal(torch.random.get_rng_state(), state[1])


def test_kinds_parse():
    assert parse_kinds("babble,reverb") == ("reverb", "babble")
    assert parse_kinds("all") == ONLINE_KINDS
    with pytest.raises(UsageError, match="speed"):
        parse_kinds("reverb,speed")
