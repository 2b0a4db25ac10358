"""Analyses from a loaded model: request checks, the lens of prompts, attribution, comparison.

Orchestration above ``modeling``; the lens math they run is ``lazarus_mcp.lens``.
"""
