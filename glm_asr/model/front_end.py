"""Whisper log-mel features: 16 kHz mono audio -> (W, n_mels, 3000) windows of 30 s.

Matches transformers' `WhisperFeatureExtractor` (torch path) as `GlmAsrProcessor` calls it: every 30 s window
is zero-padded to 480,000 samples and normalised on its own, so the padding takes part in the window's
maximum. The mel filterbank is computed here (see `mel_filters`), never downloaded.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from glm_asr.model.taps import record

SAMPLING_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
WINDOW_SAMPLES = SAMPLING_RATE * CHUNK_SECONDS  # 480,000
WINDOW_FRAMES = WINDOW_SAMPLES // HOP_LENGTH  # 3,000 (the STFT's 3,001st frame is dropped)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = 128) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters (N_FFT // 2 + 1, n_mels), float64, 0..8000 Hz.

    The same construction as librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney") and
    transformers' mel_filter_bank(..., norm="slaney", mel_scale="slaney"): n_mels + 2 points evenly spaced on
    the mel scale, a triangle between each three neighbours over the FFT bin frequencies, each triangle
    scaled by 2 / (its width in Hz) so every filter has the same area. Built in float64; applied in float32.
    """
    edges = np.array([0.0, SAMPLING_RATE / 2.0])
    mel_points = np.linspace(*_hz_to_mel(edges), n_mels + 2)
    filter_hz = _mel_to_hz(mel_points)
    fft_hz = np.linspace(0, SAMPLING_RATE // 2, N_FFT // 2 + 1)
    slopes = filter_hz[None, :] - fft_hz[:, None]  # (bins, n_mels + 2)
    widths = np.diff(filter_hz)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (filter_hz[2:] - filter_hz[:-2]))[None, :]


def split_windows(audio: torch.Tensor) -> list[torch.Tensor]:
    """Cuts 1-D audio into 30 s pieces (the last one shorter); empty audio gives one empty piece."""
    n_windows = max(1, math.ceil(audio.shape[0] / WINDOW_SAMPLES))
    return [audio[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES] for i in range(n_windows)]


def valid_frames(n_samples: int) -> int:
    """Frames of a window of n samples that hold audio, as the reference's mask counts them: ceil(n / 160)
    (not n // 160 + 1, which counts one more whenever n is a multiple of 160)."""
    return math.ceil(n_samples / HOP_LENGTH)


def log_mel(
    audio: np.ndarray | torch.Tensor,
    sampling_rate: int = SAMPLING_RATE,
    *,
    n_mels: int = 128,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features of 1-D 16 kHz audio, split into 30 s windows like the reference processor.

    Returns `features` (W, n_mels, 3000) float32 and `mask` (W, 3000) int32, where a window of n samples
    has ceil(n / 160) valid frames.
    """
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"sampling_rate={sampling_rate}: features need {SAMPLING_RATE} Hz audio; resample it first")
    samples = torch.as_tensor(audio)
    if samples.ndim != 1:
        raise ValueError(f"audio has shape {tuple(samples.shape)}: expected 1-D mono samples; downmix it first")
    if not samples.is_floating_point():
        raise ValueError(f"audio has dtype {samples.dtype}: expected float samples in [-1, 1]")
    if not torch.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples: expected finite values in [-1, 1]")
    samples = samples.to(device or samples.device, torch.float32)
    pieces = split_windows(samples)
    windows = torch.zeros(len(pieces), WINDOW_SAMPLES, device=samples.device)
    mask = torch.zeros(len(pieces), WINDOW_FRAMES, dtype=torch.int32, device=samples.device)
    for i, piece in enumerate(pieces):
        windows[i, : piece.shape[0]] = piece
        mask[i, : valid_frames(piece.shape[0])] = 1
    features = _log_mel_windows(windows, n_mels)
    record("mel", features)
    return features, mask


def _log_mel_windows(windows: torch.Tensor, n_mels: int) -> torch.Tensor:
    hann = torch.hann_window(N_FFT, device=windows.device)  # periodic, as Whisper's
    stft = torch.stft(windows, N_FFT, HOP_LENGTH, window=hann, center=True, pad_mode="reflect", return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (W, 201, 3000)
    filters = torch.from_numpy(mel_filters(n_mels)).to(windows.device, torch.float32)
    mel = filters.T @ power  # (W, n_mels, 3000)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # over the whole window, padding included
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
