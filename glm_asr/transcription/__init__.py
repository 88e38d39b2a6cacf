"""From audio to text: the processor (features and prompt), greedy generation with the KV cache, the loop
stopper, the random presets, and `transcribe`."""
