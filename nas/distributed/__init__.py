"""Data-parallel search and retraining on torch.distributed (docs/distributed.md)."""
