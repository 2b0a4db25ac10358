"""Models: finding and loading checkpoints, translating Hugging Face configs for mlx-lm,
correcting its ports, and the one family registry (``families.py``)."""
