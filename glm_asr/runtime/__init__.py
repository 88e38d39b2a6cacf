"""How the model runs fast on this machine: the CPU's features and every choice made from them (`cpu.py`), the
kernels (`kernels.py`), and int8 quantisation (`quantize.py`). Applied to a built model from outside, by swapping
modules; the model's own files never import this room."""
