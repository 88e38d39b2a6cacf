"""What the model is, in plain PyTorch: config, log-mel front end, RoPE, encoder, projector, decoder, the wiring
(`glm_asr.py`) and the stage taps. Nothing here chooses kernels: see `glm_asr.runtime`."""
