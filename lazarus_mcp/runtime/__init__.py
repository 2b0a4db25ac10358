"""The process around the core: the one MLX worker thread, the model cache, process setup,
and the async analyzer every interface calls."""
