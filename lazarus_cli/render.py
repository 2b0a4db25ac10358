"""Text rendering of core results for people."""

from __future__ import annotations

from lazarus_mcp.plots.labels import label
from lazarus_mcp.schema import (
    AnalysisResult,
    AttributionResult,
    CompareResult,
    ModelInfo,
    TokenEvolution,
)
from lazarus_mcp.tools.text import attribution_lines, compare_lines, milestone_lines

_BAR_WIDTH = 50


def model_header(info: ModelInfo) -> list[str]:
    lines = [
        f"Model: {info.model_id}",
        f"  Family: {info.family}",
        f"  Layers: {info.num_layers}",
        f"  Hidden size: {info.hidden_size}",
        f"  Vocab size: {info.vocab_size}",
        f"  Tied embeddings: {info.tied_embeddings}",
    ]
    if info.embedding_scale is not None:
        lines.append(f"  Embedding scale: {info.embedding_scale:.4f}")
    if info.final_logit_softcap is not None:
        lines.append(f"  Final logit soft-cap: {info.final_logit_softcap:g}")
    if info.quantization is not None:
        q = info.quantization
        lines.append(f"  Quantization: {q.bits}-bit {q.mode}, group size {q.group_size}")
    lines.append(f"  Dtype: {info.dtype} (computing in {info.compute_dtype} on {info.device})")
    if info.matmul != "mlx":
        lines.append(f"  Linear layers: {info.matmul} on {info.weight_dtype} weights")
    lines.append(f"  Support: {info.support}")
    return lines


def _seq(logprob: float | None) -> str:
    return "" if logprob is None else f"  whole string: log p {logprob:.3f}"


def _evolution(evo: TokenEvolution) -> list[str]:
    title = f"Token {evo.token!r}:"
    if evo.multi_token:
        title = (
            f"Token {evo.query!r} is {len(evo.pieces)} tokens {evo.pieces}; "
            f"tracking its first, {evo.token!r}:"
        )
    lines = [title]
    lines += [
        f"  Layer {layer_label(s.layer_idx):>2}: {s.probability:.4f}  (rank {s.rank})"
        + _seq(s.sequence_logprob)
        for s in evo.layers
    ]
    lines.append(
        f"  Final:    {evo.final_probability:.4f}  (rank {evo.final_rank})"
        + _seq(evo.final_sequence_logprob)
    )
    if evo.emergence_layer is None:
        lines.append("  --> Never top-1 in the captured layers")
    else:
        lines.append(f"  --> Becomes top-1 at layer {evo.emergence_layer}")
    return lines


def analysis(result: AnalysisResult) -> str:
    lines = model_header(result.model)
    if result.embedding_scale != result.model.embedding_scale:
        lines.append(f"  Embedding scale (this run): {result.embedding_scale:.4f}")
    lines += ["", f"Analyzing: {result.prompt!r}"]
    if result.chat_template_applied:
        lines.append(f"  Chat template applied; text seen: {result.text_seen!r}")
    lines += ["", *milestone_lines(result.milestones, result.fidelity)]
    lines += [
        "",
        f"Tokens ({len(result.tokens)}): {result.tokens!r}",
        f"Captured layers: {result.captured_layers}",
        "",
        "=== Final Prediction ===",
    ]
    for t in result.final_prediction:
        bar = "#" * round(t.probability * _BAR_WIDTH)
        lines.append(f"  {t.probability:.4f} {bar:<{_BAR_WIDTH}} {t.token!r}")
    lines += ["", "=== Logit Lens (top prediction at each layer) ==="]
    width = max(len(repr(p.top_token)) for p in result.layer_predictions)
    for p in result.layer_predictions:
        lines.append(
            f"  Layer {layer_label(p.layer_idx):>2}: {p.top_token!r:<{width}} "
            f"({p.top_probability:.4f})"
            f"  entropy {p.entropy:.3f}  KL {p.kl_divergence:.3f}"
        )
    if result.token_evolutions:
        lines += ["", "=== Token Evolution ==="]
        for evo in result.token_evolutions:
            lines += _evolution(evo)
    return "\n".join(lines)


def model_info(info: ModelInfo) -> str:
    lines = model_header(info)
    lines.append(f"  Chat template: {info.has_chat_template}")
    lines.append(f"  Path: {info.path}")
    return "\n".join(lines)


def layer_label(layer_idx: int | None) -> str:
    return "emb" if layer_idx is None else str(layer_idx)


def grid(result: AnalysisResult, width: int = 9) -> list[str]:
    """The top token of every layer (rows, last on top) at every position (columns)."""
    if not result.grid:
        return []
    columns = result.grid
    rows = [p.layer_idx for p in columns[0].layer_predictions]

    def cell(text: str) -> str:
        return label(text, width - 1).ljust(width)

    lines = ["", "=== Grid (top prediction per layer and position; \u2423 is a space) ==="]
    for r in reversed(range(len(rows))):
        tops = "".join(cell(c.layer_predictions[r].top_token) for c in columns)
        lines.append(f"  {layer_label(rows[r]):>5} {tops}")
    lines.append("  " + " " * 6 + "".join(cell(c.token) for c in columns))
    lines.append("  " + " " * 6 + "".join(str(c.position).ljust(width) for c in columns))
    return lines


def batch(results: list[AnalysisResult]) -> str:
    """One result as ``analysis`` renders it; several, one after another with a heading."""
    if len(results) == 1:
        return analysis(results[0]) + "\n".join(["", *grid(results[0])]).rstrip("\n")
    parts = []
    for n, result in enumerate(results, 1):
        body = analysis(result) + "\n".join(["", *grid(result)]).rstrip("\n")
        parts.append(f"##### Prompt {n} of {len(results)} #####\n{body}")
    return "\n\n".join(parts)


def attribution(result: AttributionResult) -> str:
    lines = model_header(result.model)
    lines += ["", f"Attributing: {result.prompt!r}", f"Tokens: {result.tokens!r}", ""]
    return "\n".join(lines + attribution_lines(result))


def compare(result: CompareResult) -> str:
    return "\n".join(compare_lines(result))
