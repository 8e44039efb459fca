"""Everything that needs torch: models, LoRA layers, rank allocation, data and degradations,
training, evaluation, metrics, and the PyTorch inference backend."""
