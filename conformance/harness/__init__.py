"""The harness that proves glm_asr equal to the reference: cases, weights, the reference runner, stages,
metrics, the tolerance table, the golden store, drift across CPU classes, and the mutation catalogue."""
