"""Long recordings: voice activity detection (vad.py) over a stream of samples (stream.py), and the speech
pieces that are decoded, with their place on the original timeline (segmentation.py)."""
