"""What every lens result says about itself: fidelity to the model, and its milestones."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Fidelity(BaseModel):
    """The lens of the last block's residual stream vs the model's own output, this call."""

    max_abs_prob_diff: float = Field(description="Largest |p_lens - p_model| over the vocabulary.")
    kl_divergence: float = Field(description="KL(model || lens of the last block), nats.")
    top1_agrees: bool = Field(description="Both put the same token first.")


class TopChange(BaseModel):
    layer_idx: int
    token: str = Field(description="The top-1 token from this layer on.")
    token_id: int
    previous_token: str = Field(description="The top-1 token at the previous block.")


class Milestones(BaseModel):
    """Where the final answer forms, over every block at the last position (whichever layers
    are displayed: one position's lens of every block is cheap). Null: never."""

    final_token: str = Field(description="The model's own top-1 token.")
    final_token_id: int
    rank_le_10_layer: int | None = Field(description="First block where it ranks <= 10.")
    rank_le_5_layer: int | None = Field(description="First block where it ranks <= 5.")
    rank_1_layer: int | None = Field(
        description="First block from which it ranks 1 at every later block."
    )
    entropy_below_1_layer: int | None = Field(
        description="First block whose distribution has entropy < 1 nat."
    )
    top1_changes: list[TopChange] = Field(
        description="Blocks where the top-1 token differs from the previous block's."
    )
