"""The text of a generation, shared by the CLI and the MCP tool's text content: a headline,
the milestones, then a timeline with one line per generated token (the token, its final
probability, the block where it was decided, the runner-up)."""

from __future__ import annotations

from lazarus_mcp.schema.generation import GenerationResult, GenerationStep

# A text-only client reads this much; the structured result has every step.
TIMELINE_STEPS = 256


def _pct(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.0e}"


def _sampling(result: GenerationResult) -> str:
    config = result.config
    if config.greedy:
        return "greedy"
    return (
        f"sampled at temperature {config.temperature:g}, top-p {config.top_p:g}, seed {result.seed}"
    )


def _decided(layer: int | None) -> str:
    return "-" if layer is None else f"L{layer}"


def _runner_up(step: GenerationStep) -> str:
    others = [t for t in step.final_prediction if t.token_id != step.token_id]
    return f"{others[0].token!r} {_pct(others[0].probability)}" if others else "-"


def headline(result: GenerationResult) -> list[str]:
    info = result.model
    stop = result.stop_reason + (f" ({result.stop_string!r})" if result.stop_string else "")
    template = " (chat template applied)" if result.chat_template_applied else ""
    return [
        f"{info.model_id} ({info.family}, {info.num_layers} layers, lens {info.support}): "
        f"{len(result.steps)} tokens generated after {len(result.tokens)} prompt tokens"
        f"{template}; {_sampling(result)}; stopped: {stop}",
        f"Generated: {result.generated_text!r}",
    ]


def milestone_lines(result: GenerationResult) -> list[str]:
    m = result.milestones
    fid = result.fidelity
    median = "none" if m.median_decided_layer is None else f"{m.median_decided_layer:g}"
    lines = [
        f"Decided (the block from which each written token stays top-1): median layer {median}"
        f" of layers {result.captured_layers[0]}..{result.captured_layers[-1]}"
        + (
            f"; not top-1 at the last block (sampled): steps {m.undecided_steps}"
            if m.undecided_steps
            else ""
        ),
        f"Fidelity (lens of the last block vs the model's output, worst step): max |dp| "
        f"{fid.max_abs_prob_diff:.1e}, KL {fid.kl_divergence:.1e}, top-1 "
        + ("agrees" if fid.top1_agrees else "DISAGREES"),
    ]
    for t in m.tracked:
        first = (
            "never led"
            if t.first_led_step is None
            else f"first led at step {t.first_led_step} (layer {t.first_led_layer})"
        )
        good = (
            "never the output's top-1"
            if t.led_for_good_step is None
            else f"the output's top-1 from step {t.led_for_good_step} "
            f"(top-1 for good from layer {t.led_for_good_layer})"
        )
        lines.append(f"Token {t.token!r}: {first}; {good}; written at steps {t.emitted_steps}")
    return lines


def timeline_lines(result: GenerationResult, limit: int = TIMELINE_STEPS) -> list[str]:
    width = max([len(repr(s.token)) for s in result.steps[:limit]] + [5])
    lines = [f"  step  pos  {'token':<{width}}  final p  decided  runner-up"]
    for step in result.steps[:limit]:
        lines.append(
            f"  {step.step:>4} {step.position:>4}  {step.token!r:<{width}}  "
            f"{_pct(step.probability):>7}  {_decided(step.decided_layer):>7}  {_runner_up(step)}"
        )
    more = len(result.steps) - limit
    if more > 0:
        lines.append(f"  ... {more} more steps in the structured result")
    return lines


def render_generation(result: GenerationResult) -> str:
    return "\n".join(
        [*headline(result), *milestone_lines(result), "Timeline:", *timeline_lines(result)]
    )
