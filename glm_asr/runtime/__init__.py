"""How the model runs fast on this machine: the CPU's features and every choice made from them (`cpu.py`), the
raw products it chooses among (`products.py`), the module subclasses that carry the choices out (`dispatch.py`),
their swap into a built model (`prepare.py`), and int8 quantisation (`quantize.py`). Applied from outside, by
swapping modules; the model's own files never import this room."""
