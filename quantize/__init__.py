"""Desktop side: export a CTC model to an edge-asr bundle, quantize it to int8, report the cost."""
