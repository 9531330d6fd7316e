"""Online augmentation: a batch of waveform windows, each row with probability `prob` given one
drawn kind (reverb, noise, music, babble), in torch on whatever device the batch is on.

A stored copy is the same distortion forever; here every window of every epoch draws a fresh room,
noise and SNR (WeSpeaker measured 1.165 % -> 1.000 % EER on VoxCeleb1-O for offline -> online).
The recipe is the copies' (augment/reverb.py, mix.py, babble.py), batched:

- reverb: FFT convolution with a drawn RIR, the output taken from the RIR's direct path (its peak)
  on, at the input window's power (Kaldi's shift-output and normalize-output);
- noise 0-15 dB, music 5-15 dB (Kaldi's MUSAN ranges): a window of a drawn noise (a waveform store,
  `dasv features --audio-only`: one read, never a file open), scaled to the SNR drawn, measured on
  the actual windows (P = mean square over the row's samples that hold speech);
- babble: 3-7 other rows of the batch (other utterances), each at its own 13-20 dB SNR;
- a row that would clip is scaled down as a whole (mix.limit: ratios kept).

Every draw comes from a NumPy Generator keyed by (seed, rank, step, micro-batch), never the global
RNG, so a run is reproducible and `--resume` exact, whatever the device or the loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dasv_cli.errors import InputError, UsageError

ONLINE_KINDS = ("reverb", "noise", "music", "babble")
SNR_DB = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "babble": (13.0, 20.0)}
TALKERS = (3, 7)  # babble: other utterances per row, inclusive
SALT = 0x0A06  # keeps these draws apart from any other generator keyed by the same numbers


def parse_kinds(text: str) -> tuple[str, ...]:
    """"reverb,noise" -> ("reverb", "noise") in ONLINE_KINDS order; "all" = every kind; UsageError otherwise."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if names == ["all"]:
        return ONLINE_KINDS
    unknown = [n for n in names if n not in ONLINE_KINDS]
    if unknown or not names:
        raise UsageError(f"--online-augment: unknown kind {', '.join(unknown) or repr(text)}; "
                         f"choose from {', '.join(ONLINE_KINDS)} (or all)")
    return tuple(k for k in ONLINE_KINDS if k in names)


@dataclass
class Plan:
    """One micro-batch's draws, row by row."""

    kind: np.ndarray  # int64 [B]: index into ONLINE_KINDS, -1 = left clean
    snr: np.ndarray  # float64 [B, 7]: dB per added source (noise/music: column 0; babble: the talkers)
    talkers: np.ndarray  # int64 [B]: sources added (babble 3-7; noise, music 1; others 0)
    source: np.ndarray  # int64 [B, 7]: noise/music/RIR index in its pool, or the babble talker's batch row
    offset: np.ndarray  # float64 [B, 7] in [0, 1): where a noise window starts in its noise


def plan_batch(kinds: Sequence[str], prob: float, batch: int, pools: dict[str, int],
               seed: int, rank: int, step: int, micro: int) -> Plan:
    """The draws of micro-batch `micro` of update `step` on `rank`. Every row draws every number,
    whatever it is given, so the generator is consumed the same way for any kinds or pool sizes."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(rank), int(step), int(micro), SALT])
    most = TALKERS[1]
    applied = rng.random(batch) < prob
    which = rng.integers(0, max(1, len(kinds)), size=batch)
    u_snr = rng.random((batch, most))
    talkers = rng.integers(TALKERS[0], TALKERS[1] + 1, size=batch)
    u_source = rng.random((batch, most))
    offset = rng.random((batch, most))
    kind = np.full(batch, -1, dtype=np.int64)
    snr = np.zeros((batch, most))
    count = np.zeros(batch, dtype=np.int64)
    source = np.zeros((batch, most), dtype=np.int64)
    for i in np.flatnonzero(applied) if kinds else []:
        name = kinds[int(which[i])]
        if name == "babble":
            if batch < 2:
                continue  # no other utterance to babble with
            count[i] = talkers[i]
            source[i] = (i + 1 + np.floor(u_source[i] * (batch - 1)).astype(np.int64)) % batch
        elif name in ("noise", "music"):
            count[i] = 1
        if name != "babble":
            source[i] = np.minimum(np.floor(u_source[i] * pools[name]).astype(np.int64), pools[name] - 1)
        lo, hi = SNR_DB.get(name, (0.0, 0.0))
        snr[i] = lo + u_snr[i] * (hi - lo)
        kind[i] = ONLINE_KINDS.index(name)
    return Plan(kind, snr, count, source, offset)


class SourceStores:
    """The noise, music and RIR pools: rows of waveform stores (io.store FeatureStore with audio).

    Music is what a noise store holds under a `music/` path component (MUSAN's layout: a store made
    from the MUSAN tree keeps its noise/ and music/ apart by key); every other key is noise."""

    def __init__(self, kinds: Sequence[str], noise: Any = None, rirs: Any = None) -> None:
        self.noise_store, self.rir_store = noise, rirs
        self.rows: dict[str, np.ndarray] = {}
        if noise is not None:
            keys = noise.keys()
            music = np.array(["music" in k.split("/")[:-1] for k in keys], dtype=bool)
            all_rows = noise.rows(keys)
            self.rows["noise"], self.rows["music"] = all_rows[~music], all_rows[music]
        if rirs is not None:
            self.rows["reverb"] = rirs.rows(rirs.keys())
        for kind in kinds:
            if kind == "babble":
                continue
            store = self.rir_store if kind == "reverb" else self.noise_store
            if store is None or not self.rows.get(kind, np.zeros(0)).size:
                what = "--rir-store" if kind == "reverb" else "--noise-store"
                where = f"{store.path} holds none" if store is not None else f"{what} DIR was not given"
                raise InputError(f"--online-augment {kind}: no {kind} waveforms ({where}; make a waveform "
                                 f"store with `dasv features LIST --audio-only -o DIR`)")

    def sizes(self) -> dict[str, int]:
        return {k: int(v.size) for k, v in self.rows.items()}

    def noises(self, plan: Plan, samples: int) -> np.ndarray:
        """int16 [B, samples]: each noise/music row's window of its drawn noise (tiled when shorter)."""
        out = np.zeros((plan.kind.size, samples), dtype=np.int16)
        for name in ("noise", "music"):
            pick = np.flatnonzero(plan.kind == ONLINE_KINDS.index(name))
            if pick.size:
                rows = self.rows[name][plan.source[pick, 0]]
                room = np.maximum(self.noise_store.row_samples(rows) - samples, 0)
                starts = np.minimum((plan.offset[pick, 0] * (room + 1)).astype(np.int64), room)
                out[pick] = self.noise_store.read_audio_windows(rows, starts, samples, fill="tile")
        return out

    def impulse_responses(self, plan: Plan) -> np.ndarray:
        """float32 [B, L]: each reverb row's RIR (zero-padded to the longest drawn; [B, 1] of zeros if none)."""
        pick = np.flatnonzero(plan.kind == ONLINE_KINDS.index("reverb"))
        if not pick.size:
            return np.zeros((plan.kind.size, 1), dtype=np.float32)
        rows = self.rows["reverb"][plan.source[pick, 0]]
        length = int(self.rir_store.row_samples(rows).max())
        out = np.zeros((plan.kind.size, length), dtype=np.float32)
        out[pick] = self.rir_store.read_audio_windows(rows, np.zeros(pick.size, np.int64), length) / 32768.0
        return out


def _power(x: Any, valid: Any) -> Any:
    """Mean square of each row over its first `valid` samples (float64 [B])."""
    import torch

    n = x.shape[1]
    if bool((valid < n).any()):
        x = x * (torch.arange(n, device=x.device)[None, :] < valid[:, None])
    # the norm in float32 (relative error ~1e-7: 4e-7 dB of SNR), squared in float64; 15x faster
    # than squaring a float64 copy of the batch on a CPU
    norm = torch.linalg.vector_norm(x.to(torch.float32), dim=1).double()
    return norm * norm / valid.clamp(min=1).double()


def augment(waves: Any, plan: Plan, noises: Any, rirs: Any, valid: Any) -> Any:
    """The augmented batch, float32 [B, N] on waves' device: `waves` float in [-1, 1) [B, N];
    `noises` [B, N] and `rirs` [B, L] float tensors (rows not drawn for them are ignored); `valid`
    int64 [B] samples of each row that hold speech (the rest is padding of a short utterance)."""
    import torch

    device = waves.device
    x = waves.to(torch.float32)
    out = x.clone()
    kind = torch.as_tensor(plan.kind, device=device)
    ps = _power(x, valid)
    rev = torch.nonzero(kind == ONLINE_KINDS.index("reverb")).flatten()
    if rev.numel():
        h = rirs[rev].to(device=device, dtype=torch.float32)
        n, length = x.shape[1], h.shape[1]
        size = 1 << (n + length - 2).bit_length()  # >= n + length - 1, a power of two: a fast FFT length
        full = torch.fft.irfft(torch.fft.rfft(x[rev], size) * torch.fft.rfft(h, size), size)
        direct = h.abs().argmax(dim=1)  # Kaldi's shift-output: from the direct path on
        y = torch.gather(full, 1, direct[:, None] + torch.arange(n, device=device)[None, :])
        p_out = _power(y, valid[rev])
        gain = torch.where(p_out > 0, torch.sqrt(ps[rev] / p_out.clamp(min=1e-30)), torch.zeros_like(p_out))
        out[rev] = y * gain.to(y.dtype)[:, None]
    add = torch.nonzero((kind == ONLINE_KINDS.index("noise")) | (kind == ONLINE_KINDS.index("music"))).flatten()
    if add.numel():
        noise = noises[add].to(device=device, dtype=torch.float32)
        out[add] = x[add] + _scaled(noise, ps[add], valid[add], plan.snr[add.cpu().numpy(), 0])
    bab = np.flatnonzero(plan.kind == ONLINE_KINDS.index("babble"))
    for t in range(TALKERS[1]):
        rows = bab[plan.talkers[bab] > t]
        if rows.size:
            r = torch.as_tensor(rows, device=device)
            talker = x[torch.as_tensor(plan.source[rows, t], device=device)]
            out[r] += _scaled(talker, ps[r], valid[r], plan.snr[rows, t])
    peak = out.abs().amax(dim=1, keepdim=True)
    return torch.where(peak > 1.0, out / peak.clamp(min=1.0), out)


def _scaled(noise: Any, speech_power: Any, valid: Any, snr_db: np.ndarray) -> Any:
    """`noise` rows scaled so that speech_power / their power (over `valid` samples) = 10^(snr/10)."""
    import torch

    pn = _power(noise, valid)
    target = torch.as_tensor(10.0 ** (np.asarray(snr_db, dtype=np.float64) / 10.0), device=noise.device)
    gain = torch.where((pn > 0) & (speech_power > 0), torch.sqrt(speech_power / (pn.clamp(min=1e-30) * target)),
                       torch.zeros_like(pn))
    return noise * gain.to(noise.dtype)[:, None]


__all__ = ["ONLINE_KINDS", "Plan", "SNR_DB", "SourceStores", "augment", "parse_kinds", "plan_batch"]
