"""``lazarus introspect families``: what the lens supports, at which level, verified on what.

Reads only the family registry (no MLX import), so it answers at once.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

SELF_CHECKED = (
    "any other mlx-lm decoder with a residual block list: served 'self-checked' when the lens "
    "of its last block equals its own logits at load (max |Δp| <= 1e-4), refused otherwise"
)


def rows() -> list[dict[str, Any]]:
    from lazarus_mcp.modeling.families import FAMILIES, NOT_RESIDUAL

    out: list[dict[str, Any]] = []
    for name in sorted(FAMILIES):
        spec = FAMILIES[name]
        head = [
            label
            for label, on in (
                ("embedding x sqrt(hidden)", spec.scales_embeddings),
                (f"logits / {spec.logit_divisor_key}", spec.logit_divisor_key),
                (f"logits x {spec.logit_multiplier_key}", spec.logit_multiplier_key),
            )
            if on
        ]
        fixes = [fix.__name__ for fix in (*spec.build_fixes, *spec.port_fixes)]
        out.append(
            {
                "family": name,
                "support": spec.support,
                "kind": "multimodal container (its text_config's family)"
                if spec.container
                else "decoder",
                "head": head,
                "port_corrections": fixes,
                "verified_on": spec.verified_on,
            }
        )
    out.append({"family": "(others)", "support": "self-checked", "verified_on": SELF_CHECKED})
    out += [
        {"family": name, "support": "refused", "verified_on": reason}
        for name, reason in sorted(NOT_RESIDUAL.items())
    ]
    return out


def render(table: list[dict[str, Any]]) -> str:
    width = max(len(row["family"]) for row in table)
    lines = [f"{'Family':<{width}}  {'Support':<12}  Verified on / notes"]
    for row in table:
        notes = [row["verified_on"]]
        if row.get("kind", "decoder") != "decoder":
            notes.insert(0, row["kind"])
        if row.get("head"):
            notes.append("head: " + ", ".join(row["head"]))
        if row.get("port_corrections"):
            notes.append("port corrections: " + ", ".join(row["port_corrections"]))
        lines.append(f"{row['family']:<{width}}  {row['support']:<12}  {'; '.join(notes)}")
    return "\n".join(lines)


def families(
    json_out: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """List the model families the lens supports, their support level and what verified them."""
    table = rows()
    typer.echo(json.dumps(table, indent=2) if json_out else render(table))
