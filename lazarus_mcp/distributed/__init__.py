"""The lens over MLX's distributed backends: a model's blocks split across processes and hosts.

Rank 0 is the process the user talks to (the CLI, the MCP server, the Python API); it starts
ranks 1..N-1 the way ``mlx.launch`` does (``hosts``, ``launch``), joins them in one
``mx.distributed`` group, and every rank loads only its own blocks (``split``, ``stage_load``).
A request is broadcast to every rank; the residual stream goes rank to rank through the engine's
tapped forward (``lens.taps.Stage``); each rank runs the lens on its own blocks and only compact
statistics come back (``wire``, ``lens_step``). ``group`` watches the ranks: a rank that dies or
hangs ends the call with one line, and the group is stopped and reported lost.
"""
