"""Log-mel spectrograms in numpy (no audio library needed), for the spoken-word task."""

from __future__ import annotations

import numpy as np

N_FFT = 256
HOP = 128
N_MELS = 40
SECONDS = 1.0


def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape [n_fft // 2 + 1, n_mels]."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (center - lower)
    falling = (upper - freqs[None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def logmel(clip: np.ndarray, sample_rate: int, bank: np.ndarray) -> np.ndarray:
    """A clip (int16 or float) centre-cropped/padded to one second -> float32[frames, mels, 1],
    standardized per clip."""
    x = clip.astype(np.float32) / (32768.0 if clip.dtype == np.int16 else 1.0)
    n = int(SECONDS * sample_rate)
    if len(x) >= n:
        start = (len(x) - n) // 2
        x = x[start : start + n]
    else:
        pad = n - len(x)
        x = np.pad(x, (pad // 2, pad - pad // 2))
    frames = 1 + (n - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2
    feat = np.log(spec @ bank + 1e-6)
    feat = (feat - feat.mean()) / (feat.std() + 1e-6)
    return feat[..., None].astype(np.float32)


def clips_to_logmel(arrays: dict, split: str, sample_rate: int) -> np.ndarray:
    """All clips of ``split`` from a concatenated-clips npz (``x_*``, ``offsets_*``,
    ``lengths_*``)."""
    bank = mel_filterbank(sample_rate)
    x, offsets, lengths = (
        arrays[f"x_{split}"],
        arrays[f"offsets_{split}"],
        arrays[f"lengths_{split}"],
    )
    return np.stack(
        [logmel(x[o : o + n], sample_rate, bank) for o, n in zip(offsets, lengths, strict=True)]
    )
