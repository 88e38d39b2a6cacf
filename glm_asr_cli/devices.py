"""`--device`, checked the same way by every command that loads a model."""

from __future__ import annotations


def check_device(device: str) -> None:
    """Refuses, in one line and before anything loads, a --device this torch cannot run on."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: not a device name; expected cpu, cuda or cuda:N") from e
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: expected cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device is visible to torch"
            raise RuntimeError(f"--device {device}: {build}; use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
