"""``model_info`` and ``loaded_models``: what a model is, and what the process holds.

``model_info`` loads the model (a later call on it starts at once); ``loaded_models`` reads the
cache and waits for nothing, so it answers while an analysis runs.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.schema import ModelInfo
from lazarus_mcp.tools.fields import ModelField
from lazarus_mcp.tools.spec import Input, Session, ToolSpec


class ModelInfoInput(Input):
    model: ModelField


class LoadedModelsInput(Input):
    pass


class ModelStatus(ModelInfo):
    """``ModelInfo`` plus whether the model was in memory before this call."""

    already_loaded: bool = Field(
        description="True: the model was in memory when the call arrived. False: it was loaded "
        "for this call; it now stays loaded, so later calls on it start at once (until evicted)."
    )


class LoadedModel(BaseModel):
    model: ModelInfo
    memory_bytes: int = Field(description="Bytes of weights the model holds in memory.")


class LoadedModels(BaseModel):
    """What the server holds in memory and the limits it evicts by."""

    models: list[LoadedModel] = Field(description="Least recently used first.")
    max_models: int = Field(description="Models kept at most; the least recently used goes.")
    memory_budget_bytes: int | None = Field(
        description="Bytes of weights kept at most (null: no budget; one model always stays)."
    )
    memory_used_bytes: int


INFO_DOC = """\
Describe a model: family (model_type), number of blocks (layers are 0..num_layers-1), hidden \
size, vocabulary size, tied embeddings, embedding scale (Gemma), final logit soft-cap (Gemma 2), \
quantization, dtypes, device, chat template, and already_loaded. Loads the model if it is not in \
memory, so a later analyze starts at once. Use it to pick valid layer indices."""

LOADED_DOC = """\
The models the server holds in memory (least recently used first), with their sizes and the \
cache limits. Calls on a loaded model start at once; others load it first, which may evict the \
least recently used model."""


async def model_info(session: Session, params: ModelInfoInput) -> ModelStatus:
    already = session.cache.peek(params.model) is not None
    analyzer = await session.open(params.model)
    return ModelStatus(**analyzer.info.model_dump(), already_loaded=already)


async def loaded_models(session: Session, params: LoadedModelsInput) -> LoadedModels:
    cache = session.cache
    held = cache.loaded()
    return LoadedModels(
        models=[LoadedModel(model=m.info, memory_bytes=m.nbytes) for m in held],
        max_models=cache.max_models,
        memory_budget_bytes=cache.memory_budget,
        memory_used_bytes=sum(m.nbytes for m in held),
    )


def render_status(status: ModelStatus) -> str:
    extras = [
        f"embedding scale {status.embedding_scale:g}" if status.embedding_scale else "",
        f"soft-cap {status.final_logit_softcap:g}" if status.final_logit_softcap else "",
        f"{status.quantization.bits}-bit" if status.quantization else "",
        "tied embeddings" if status.tied_embeddings else "untied head",
        "chat template" if status.has_chat_template else "no chat template",
    ]
    return (
        f"{status.model_id}: {status.family} ({status.support}), {status.num_layers} layers, "
        f"hidden {status.hidden_size}, vocab {status.vocab_size}, "
        f"{', '.join(e for e in extras if e)}; "
        f"{status.dtype} computed in {status.compute_dtype} on {status.device}"
        + (f" (linear layers: {status.matmul})" if status.matmul != "mlx" else "")
        + "; "
        + ("was loaded already" if status.already_loaded else "loaded by this call")
    )


def render_loaded(loaded: LoadedModels) -> str:
    if not loaded.models:
        return f"No model loaded (up to {loaded.max_models} kept)."
    names = ", ".join(
        f"{m.model.model_id} ({m.memory_bytes / 2**20:.1f} MiB)" for m in loaded.models
    )
    return f"Loaded, least recently used first: {names}; up to {loaded.max_models} kept."


def _loads(cache: ModelCache, params: ModelInfoInput) -> bool:
    return cache.peek(params.model) is None


MODEL_INFO = ToolSpec(
    name="model_info",
    example={"model": "demo"},
    doc=INFO_DOC,
    inputs=ModelInfoInput,
    result=ModelStatus,
    run=model_info,
    render=render_status,
    steps=1,
    command="info",
    needs_worker=_loads,
)
LOADED_MODELS = ToolSpec(
    name="loaded_models",
    doc=LOADED_DOC,
    inputs=LoadedModelsInput,
    result=LoadedModels,
    run=loaded_models,
    render=render_loaded,
    steps=0,
    command=None,  # a command's process holds no model between commands
    needs_worker=lambda cache, params: False,
)
