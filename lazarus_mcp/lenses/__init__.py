"""Learned lenses that read the early layers too: the tuned lens and the Jacobian lens.

Fitted in MLX (``jacobian_fit``, ``tuned_train``), imported from the published formats
(``importers``), stored as LENS_DIR (``lens_dir``), read through the model's own head
(``readout``).
"""
