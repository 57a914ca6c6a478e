"""Real PyTorch learning: proxy models, data, pruning, LoRA, aggregation, training."""
