"""Text shared by the CLI and the MCP tools' text content: milestones first (what an agent reads
before anything else), the lens by layer and position, attribution and comparison tables.
Neutral: the CLI and the MCP server both import it, neither owns it.
"""

from __future__ import annotations

from lazarus_mcp.schema import (
    AnalysisBatch,
    AnalysisResult,
    AttributionResult,
    CompareResult,
    Fidelity,
    Milestones,
    TokenEvolution,
)


def _layer(value: int | None) -> str:
    return "never" if value is None else f"layer {value}"


def _prob(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.0e}"


def milestone_lines(milestones: Milestones, fidelity: Fidelity) -> list[str]:
    m = milestones
    changes = (
        ", ".join(f"L{c.layer_idx} {c.previous_token!r}->{c.token!r}" for c in m.top1_changes)
        or "none"
    )
    check = "agrees" if fidelity.top1_agrees else "DISAGREES"
    return [
        f"Milestones for the final top-1 {m.final_token!r}: rank <= 10 at "
        f"{_layer(m.rank_le_10_layer)}, <= 5 at {_layer(m.rank_le_5_layer)}, rank 1 (for good) "
        f"at {_layer(m.rank_1_layer)}; entropy < 1 nat at {_layer(m.entropy_below_1_layer)}",
        f"Top-1 changes: {changes}",
        f"Fidelity (lens of the last block vs the model's output): max |dp| "
        f"{fidelity.max_abs_prob_diff:.1e}, KL {fidelity.kl_divergence:.1e}, top-1 {check}",
    ]


def attribution_lines(result: AttributionResult, top: int = 8) -> list[str]:
    """Milestones, each target's sum check, its largest components, and the sub-layer lens."""
    lines = milestone_lines(result.milestones, result.fidelity)
    for n, target in enumerate(result.targets):
        lines.append(
            f"Target {target.token!r} (id {target.token_id}): logit {target.logit:.3f}, "
            f"pre-cap {target.logit_precap:.3f}, components sum {target.component_sum:.3f}, "
            f"p {_prob(target.probability)}"
        )
        ranked = sorted(result.components, key=lambda c: -abs(c.logits[n]))[:top]
        for c in ranked:
            where = "" if c.layer_idx is None else f" {c.layer_idx}"
            lines.append(f"  {c.kind + where:<14} {c.logits[n]:+9.3f}")
    if result.foil is not None and result.logit_diffs is not None:
        first = result.targets[0].token
        lines.append(f"Target {first!r} minus foil {result.foil.token!r}, largest components:")
        pairs = sorted(
            zip(result.components, result.logit_diffs, strict=True), key=lambda p: -abs(p[1])
        )
        for c, diff in pairs[:top]:
            where = "" if c.layer_idx is None else f" {c.layer_idx}"
            lines.append(f"  {c.kind + where:<14} {diff:+9.3f}")
    lines.append("Lens after attention -> after the whole block (top-1; targets' p):")
    for mid, block in zip(result.sublayer_predictions, result.layer_predictions, strict=True):
        tracked_mid = " ".join(_prob(t.probability) for t in mid.tracked)
        tracked_block = " ".join(_prob(t.probability) for t in block.tracked)
        lines.append(
            f"  block {mid.layer_idx:2d}: attn {mid.top_token!r} {_prob(mid.top_probability)} "
            f"[{tracked_mid}] -> mlp {block.top_token!r} {_prob(block.top_probability)} "
            f"[{tracked_block}]"
        )
    return lines


def compare_lines(result: CompareResult) -> list[str]:
    a, b = result.a, result.b
    lines = [
        f"A: {a.model.model_id} on {a.prompt!r} -> {a.final_prediction[0].token!r} "
        f"{_prob(a.final_prediction[0].probability)}",
        f"B: {b.model.model_id} on {b.prompt!r} -> {b.final_prediction[0].token!r} "
        f"{_prob(b.final_prediction[0].probability)}",
        f"Divergence layer (top-1 differs from here on): {_layer(result.divergence_layer)}; "
        f"final JS {result.final_js_divergence:.2e} nats",
        "A milestones: " + milestone_lines(a.milestones, a.fidelity)[0],
        "B milestones: " + milestone_lines(b.milestones, b.fidelity)[0],
        "Per layer: JS (nats), KL(A||B), KL(B||A), top-1 A | top-1 B",
    ]
    for row in result.layers:
        lines.append(
            f"  layer {row.layer_idx:2d}: JS {row.js_divergence:.2e}  KL {row.kl_a_b:.2e} "
            f"{row.kl_b_a:.2e}  {row.top_a.token!r} {_prob(row.top_a.probability)} | "
            f"{row.top_b.token!r} {_prob(row.top_b.probability)}"
        )
        for ta, tb in zip(row.tracked_a, row.tracked_b, strict=True):
            lines.append(
                f"      {ta.token!r}: A {_prob(ta.probability)} #{ta.rank} | "
                f"B {_prob(tb.probability)} #{tb.rank}"
            )
    return lines


# Short renderings for text-only clients: the headline numbers, not the whole result.


def _pct(p: float) -> str:
    # Percent for the large ones; small ones keep their magnitude (rank already orders them).
    return f"{p:.1%}" if p >= 0.001 else f"{p:.0e}"


def render_analysis(result: AnalysisResult) -> str:
    info = result.model
    top = ", ".join(f"{t.token!r} {_pct(t.probability)}" for t in result.final_prediction[:5])
    lines = [
        f"{info.model_id} ({info.family}, {info.num_layers} layers): {len(result.tokens)} "
        f"tokens, predicting after {result.tokens[-1]!r}"
        + (" (chat template applied)" if result.chat_template_applied else "")
        + f"; lens {info.support}",
        *milestone_lines(result.milestones, result.fidelity),
        f"Final prediction: {top}",
        "Top token by layer:",
    ]
    lines += [
        f"  layer {'emb' if p.layer_idx is None else p.layer_idx}: {p.top_token!r} "
        f"{_pct(p.top_probability)} "
        f"(entropy {p.entropy:.2f}, KL {p.kl_divergence:.2f})"
        for p in result.layer_predictions
    ]
    lines += render_evolutions(result.token_evolutions)
    lines += render_grid(result)
    return "\n".join(lines)


GRID_TEXT_POSITIONS = 64


def render_grid(result: AnalysisResult) -> list[str]:
    """One line per position: the final top token and each layer's top token."""
    if not result.grid:
        return []
    lines = ["Grid (per position: the final top token, then the top token by layer):"]
    for column in result.grid[:GRID_TEXT_POSITIONS]:
        final = column.final_prediction[0]
        tops = " ".join(repr(p.top_token) for p in column.layer_predictions)
        lines.append(
            f"  pos {column.position} {column.token!r}: {final.token!r} "
            f"{_pct(final.probability)}; layers {tops}"
        )
    more = len(result.grid) - GRID_TEXT_POSITIONS
    if more > 0:
        lines.append(f"  ... {more} more positions in the structured result")
    return lines


def render_batch(batch: AnalysisBatch) -> str:
    return "\n\n".join(
        f"Prompt {n} of {len(batch.results)}:\n{render_analysis(r)}"
        for n, r in enumerate(batch.results, 1)
    )


def render_evolutions(evolutions: list[TokenEvolution]) -> list[str]:
    lines = []
    for evo in evolutions:
        path = ", ".join(
            f"L{'emb' if s.layer_idx is None else s.layer_idx} {_pct(s.probability)} #{s.rank}"
            for s in evo.layers
        )
        first = (
            "never rank 1"
            if evo.emergence_layer is None
            else f"rank 1 from layer {evo.emergence_layer}"
        )
        split = f" (first of {evo.pieces})" if evo.multi_token else ""
        if evo.final_sequence_logprob is not None:
            path += "; whole string log p by layer: " + ", ".join(
                f"L{s.layer_idx} {s.sequence_logprob:.2f}" for s in evo.layers
            )
            split += f" (whole string final log p {evo.final_sequence_logprob:.3f})"
        lines.append(
            f"Token {evo.token!r}{split}: {path}; final {_pct(evo.final_probability)} "
            f"#{evo.final_rank}; {first}"
        )
    return lines
