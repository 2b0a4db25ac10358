"""The lens while the model writes: each generated token, each captured block, over a KV cache.

``run`` drives the engine's step mode (``lens/step.py``: one tapped forward per token over the
model's own cache) and reads the lens at every token it emits; ``sampling`` chooses the token,
``stopping`` ends the generation, ``gate`` refuses what would cost too much before any work,
``results`` fills the :class:`~lazarus_mcp.schema.generation.GenerationResult`. Runs on the MLX
worker thread; ``runtime/analyzer.py`` drives it a step per job, so progress, cancellation and
other calls interleave between tokens.
"""
