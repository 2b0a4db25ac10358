"""The lens itself: taps on the model's own forward, the head, statistics, layer selection,
tokens, and the computation that fills a result. No device or BLAS setup, no I/O."""
