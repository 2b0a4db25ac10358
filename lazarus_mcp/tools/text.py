"""Text summaries shared by the CLI and the MCP tools' text content: milestones first (what an
agent reads before anything else), then attribution and comparison tables.
"""

from __future__ import annotations

from lazarus_mcp.schema import AttributionResult, CompareResult, Fidelity, Milestones


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
