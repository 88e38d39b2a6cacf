"""ONNX: the two exported graphs' contract (`graphs.py`) and the onnxruntime backend (`backend.py`)."""
