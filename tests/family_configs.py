"""The per-family test configs: one tiny config per registry family, with the values real
checkpoints use where they change the forward (RoPE bases and scaling, partial rotary factors,
windows shorter than the test prompts, logit scales, MoE routing), in transformers 5's keys.

``tests/checkpoints.py`` builds these with mlx-lm's model classes (the default suite);
``tests/test_torch_families.py`` builds them with transformers. Family knowledge of the tests
lives here and nowhere else.
"""

from __future__ import annotations

from typing import Any

SLIDING, FULL = "sliding_attention", "full_attention"
THREE_LOCAL_ONE_GLOBAL = [SLIDING] * 3 + [FULL]

BASE_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
    "tie_word_embeddings": False,
}


def _rope(theta: float, **extra: Any) -> dict[str, Any]:
    return {
        "rope_theta": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta, **extra},
    }


_GEMMA3_TEXT = {
    "model_type": "gemma3_text",
    "tie_word_embeddings": True,
    "query_pre_attn_scalar": 16,
    "sliding_window": 3,
    "layer_types": [SLIDING, FULL] * 2,
    "rope_theta": None,
    "rope_parameters": {
        FULL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
    },
}

FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {"tie_word_embeddings": True},
    "qwen3": {"tie_word_embeddings": True},
    "phi3": {},
    "olmo2": {},
    "granite": {
        "embedding_multiplier": 12.0,
        "attention_multiplier": 0.25,
        "residual_multiplier": 0.5,
        "logits_scaling": 4.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
    },
    "gemma": {"tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {
        "tie_word_embeddings": True,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "query_pre_attn_scalar": 16,
        "sliding_window": 4,
    },
    "gemma3_text": {
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 16,
        "sliding_window": 3,
        "sliding_window_pattern": 2,
    },
    # Containers: the language model's config is the text_config (vocab from it, not the top).
    "gemma3": {"text_config": _GEMMA3_TEXT, "vocab_size": 262208},
    "mistral3": {
        # The flags differ as in real checkpoints' configs; transformers ties as the top says.
        "text_config": {
            "model_type": "mistral",
            "sliding_window": None,
            "tie_word_embeddings": True,
            **_rope(1000000000.0),
        },
        "tie_word_embeddings": False,
    },
    "gpt2": {
        "n_embd": 64,
        "n_layer": 3,
        "n_head": 4,
        "n_positions": 128,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
    },
    "gpt_neox": {  # Pythia: exact GELU, partial rotary 0.25, parallel residual; width not 4x
        "intermediate_size": 192,
        "num_key_value_heads": None,
        "hidden_act": "gelu",
        "use_parallel_residual": True,
        "layer_norm_eps": 1e-5,
        **_rope(10000.0, partial_rotary_factor=0.25),
    },
    "phi": {  # phi-2: partial rotary 0.4, tanh GELU, biases
        "num_key_value_heads": 4,
        "intermediate_size": 256,
        "hidden_act": "gelu_new",
        "layer_norm_eps": 1e-5,
        **_rope(10000.0, partial_rotary_factor=0.4),
    },
    "mixtral": {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": None,
        **_rope(1e6),
    },
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
        "norm_topk_prob": False,
        **_rope(1e6),
    },
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        **_rope(1e6),
    },
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": False, **_rope(1e4)},
    "granitemoe": {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "logits_scaling": 4.0,
        "embedding_multiplier": 12.0,
        "residual_multiplier": 0.22,
        "attention_multiplier": 0.0156,
        "attention_bias": False,
        "tie_word_embeddings": True,
        **_rope(1e4),
    },
    "cohere": {
        "logit_scale": 0.0625,
        "use_qk_norm": False,
        "layer_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        **_rope(8e6),
    },
    "cohere2": {
        "logit_scale": 0.25,
        "sliding_window": 4,
        "layer_types": THREE_LOCAL_ONE_GLOBAL,
        "layer_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        **_rope(5e4),
    },
    "olmo3": {"sliding_window": 4, "layer_types": THREE_LOCAL_ONE_GLOBAL, **_rope(5e5)},
    "smollm3": {"no_rope_layers": [1, 1, 1, 0], "tie_word_embeddings": True, **_rope(2e6)},
    "stablelm": {
        "num_key_value_heads": 4,
        "use_qkv_bias": True,
        "layer_norm_eps": 1e-5,
        **_rope(10000.0, partial_rotary_factor=0.25),
    },
    "glm4": {"attention_bias": True, **_rope(10000.0, partial_rotary_factor=0.5)},
    "exaone4": {
        "sliding_window": 4,
        "sliding_window_pattern": 4,
        "layer_types": THREE_LOCAL_ONE_GLOBAL,
        **_rope(1e6),
    },
    "starcoder2": {
        "sliding_window": 4,
        "hidden_act": "gelu_pytorch_tanh",
        "use_bias": True,
        "norm_epsilon": 1e-5,
        **_rope(1e5),
    },
    "ministral3": {
        "num_key_value_heads": 2,
        "rope_theta": None,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 1000000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "max_position_embeddings": 256,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "llama_4_scaling_beta": 0.1,
        },
    },
    "deepseek_v3": {  # MLA, routed + shared experts, a dense first block, yarn
        "num_key_value_heads": 4,
        "moe_intermediate_size": 32,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1,
        "norm_topk_prob": True,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 16,
        "v_head_dim": 16,
        "head_dim": 8,
        "rope_interleave": True,
        "rope_theta": None,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    },
    "qwen3_next": {  # gated delta-net blocks with a full-attention block every 4th
        "head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "layer_types": ["linear_attention"] * 3 + [FULL],
        **_rope(10000.0, partial_rotary_factor=0.25),
    },
    "lfm2": {  # short convolutions with attention blocks between
        "norm_eps": 1e-5,
        "conv_bias": False,
        "conv_L_cache": 3,
        "block_multiple_of": 32,
        "block_ffn_dim_multiplier": 1.0,
        "block_auto_adjust_ff_dim": True,
        "layer_types": ["conv", "full_attention", "conv", "full_attention"],
        "tie_word_embeddings": True,
        **_rope(1e6),
    },
    "gpt_oss": {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "intermediate_size": 64,
        "sliding_window": 4,
        "layer_types": [SLIDING, FULL] * 2,
        "attention_bias": True,
        "swiglu_limit": 7.0,
        "rope_theta": None,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
        },
    },
    # Llama 4 checkpoints are the multimodal container; chunked attention with a NoPE global
    # block every 4th (temperature-tuned), MoE every other block, Llama 3 RoPE scaling.
    "llama4": {
        "text_config": {
            "model_type": "llama4_text",
            "attention_bias": False,
            "intermediate_size": 64,
            "intermediate_size_mlp": 128,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
            "use_qk_norm": True,
            "rms_norm_eps": 1e-5,
            "attention_chunk_size": 4,
            "attn_temperature_tuning": True,
            "floor_scale": 4,
            "attn_scale": 0.1,
            "no_rope_layer_interval": 4,
            "rope_theta": None,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    },
}


# Quantization modes each family ships in on mlx-community beyond 4-bit affine.
EXTRA_QUANTIZATION: dict[str, tuple[str, ...]] = {"gpt_oss": ("mxfp4",)}


def family_config(family: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """The family's config (a container's text config filled in as a model of its own)."""
    own = {**FAMILY_CONFIGS.get(family, {}), **overrides}
    if "text_config" in own:
        text = {**BASE_CONFIG, **own["text_config"], "vocab_size": vocab_size}
        top = {k: v for k, v in own.items() if k != "text_config"}
        config = {"model_type": family, **top, "text_config": _drop_none(text)}
        config.setdefault("vocab_size", vocab_size)
        return config
    if "n_embd" in own:  # GPT-2's own key names
        config = {"model_type": family, **own}
    else:
        config = {**BASE_CONFIG, **own, "model_type": family}
    config["vocab_size"] = vocab_size
    return _drop_none(config)


def _drop_none(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if v is not None}
