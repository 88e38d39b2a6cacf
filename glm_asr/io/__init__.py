"""Reading and writing files: checkpoints (`checkpoint.py`, `safetensors_file.py`), audio files (`audio_file.py`,
and `pyav.py` for every format ffmpeg decodes), and atomic directory replacement (`atomic.py`)."""
