"""The async analyzer: the one core behind the Python API, the CLI and the MCP server."""

from __future__ import annotations

from types import TracebackType

from lazarus_mcp import worker
from lazarus_mcp.cache import ModelCache, default_cache
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.layers import select_layers
from lazarus_mcp.lens import LensArrays, compute_lens
from lazarus_mcp.loading import LoadedModel, LoadOptions
from lazarus_mcp.models import (
    AnalysisConfig,
    AnalysisResult,
    LayerPrediction,
    ModelInfo,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
)
from lazarus_mcp.tokens import ResolvedToken, TokenText, encode_prompt


def _top(text: TokenText, ids: list[int], probs: list[float]) -> list[TokenProbability]:
    return [
        TokenProbability(token=text(i), token_id=i, probability=p)
        for i, p in zip(ids, probs, strict=True)
    ]


def _layer_predictions(text: TokenText, arrays: LensArrays) -> list[LayerPrediction]:
    predictions = []
    for row, layer in enumerate(arrays.layers):
        top = _top(text, arrays.top_ids[row].tolist(), arrays.top_probs[row].tolist())
        predictions.append(
            LayerPrediction(
                layer_idx=layer,
                top_token=top[0].token,
                top_token_id=top[0].token_id,
                top_probability=top[0].probability,
                top_k=top,
                entropy=float(arrays.entropy[row]),
                kl_divergence=max(0.0, float(arrays.kl[row])),
            )
        )
    return predictions


def _evolutions(
    text: TokenText, tracked: list[ResolvedToken], arrays: LensArrays
) -> list[TokenEvolution]:
    evolutions = []
    for col, token in enumerate(tracked):
        steps = [
            TokenAtLayer(
                layer_idx=layer,
                probability=float(arrays.tracked_probs[row, col]),
                rank=int(arrays.tracked_ranks[row, col]),
            )
            for row, layer in enumerate(arrays.layers)
        ]
        evolutions.append(
            TokenEvolution(
                query=token.query,
                token=text(token.token_id),
                token_id=token.token_id,
                pieces=token.pieces,
                multi_token=token.multi_token,
                layers=steps,
                final_probability=float(arrays.final_tracked_probs[col]),
                final_rank=int(arrays.final_tracked_ranks[col]),
                emergence_layer=next((s.layer_idx for s in steps if s.rank == 1), None),
            )
        )
    return evolutions


def analyze_loaded(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    """The whole analysis of one prompt, synchronously, on the MLX worker thread."""
    info = loaded.info
    if not 1 <= config.top_k <= info.vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {info.vocab_size} (the vocab size)")
    layers = select_layers(config, info.num_layers)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    text = loaded.token_text
    tracked = [text.resolve(query) for query in config.track_tokens]
    for token in tracked:
        if token.token_id >= info.vocab_size:
            raise InvalidRequestError(f"token {token.query!r} is outside the model's vocabulary")
    factor = loaded.embedding_factor(config.embedding_scale)
    arrays = compute_lens(
        loaded.model,
        loaded.head,
        encoded.token_ids,
        layers,
        config.top_k,
        [t.token_id for t in tracked],
        factor,
        loaded.sliding_windows,
    )
    scale = config.embedding_scale if config.embedding_scale is not None else info.embedding_scale
    return AnalysisResult(
        model=info,
        prompt=prompt,
        text_seen=encoded.text_seen,
        chat_template_applied=encoded.chat_template_applied,
        tokens=text.many(encoded.token_ids),
        token_ids=encoded.token_ids,
        position=len(encoded.token_ids) - 1,
        embedding_scale=scale,
        config=config,
        captured_layers=layers,
        final_prediction=_top(text, arrays.final_top_ids.tolist(), arrays.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, arrays),
        token_evolutions=_evolutions(text, tracked, arrays),
    )


class _Opening:
    """``async with ModelAnalyzer.from_pretrained(...)`` (or ``await`` it)."""

    def __init__(self, model_id: str, options: LoadOptions, cache: ModelCache) -> None:
        self._args = (model_id, options, cache)

    def __await__(self):  # type: ignore[no-untyped-def]
        return ModelAnalyzer.load(*self._args).__await__()

    async def __aenter__(self) -> ModelAnalyzer:
        return await ModelAnalyzer.load(*self._args)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The model stays in the shared cache for the next analyzer of the process.
        return None


class ModelAnalyzer:
    """Logit-lens analysis of one loaded model.

    >>> async with ModelAnalyzer.from_pretrained("demo") as analyzer:
    ...     result = await analyzer.analyze("The capital of France is")
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        cache: ModelCache | None = None,
    ) -> _Opening:
        return _Opening(model_id, LoadOptions(dtype=dtype, device=device), cache or default_cache())

    @classmethod
    async def load(
        cls, model_id: str, options: LoadOptions | None = None, cache: ModelCache | None = None
    ) -> ModelAnalyzer:
        return cls(await (cache or default_cache()).get(model_id, options))

    @property
    def info(self) -> ModelInfo:
        return self._loaded.info

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    async def analyze(self, prompt: str, config: AnalysisConfig | None = None) -> AnalysisResult:
        return await worker.run(analyze_loaded, self._loaded, prompt, config or AnalysisConfig())
