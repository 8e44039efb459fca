"""Model loading, LoRA layers, rank allocation, data and degradations, training, metrics."""
