"""Hugging Face Gemma (1) decoder weights -> vlx's GemmaDecoder (vlx/models/gemma.py): the
language model of PaliGemma, and of a Video-LMM recipe that starts from a real small LM.

  fields, params = hf_gemma.import_state(config_dict, state_dict)   # GemmaForCausalLM
  GemmaDecoder(**fields).apply({"params": params}, ...)

`prefix` names where the decoder sits in the state dict (`model` in GemmaForCausalLM; another
prefix inside a larger model such as PaliGemma). Mapping, per layer i:
  {prefix}.layers.{i}.input_layernorm            -> layer_{i}/ln_attn/scale
  {prefix}.layers.{i}.self_attn.{q,k,v}_proj     -> layer_{i}/attn/{query,key,value}/kernel
  {prefix}.layers.{i}.self_attn.o_proj           -> layer_{i}/attn/out/kernel
  {prefix}.layers.{i}.post_attention_layernorm   -> layer_{i}/ln_mlp/scale
  {prefix}.layers.{i}.mlp.{gate,up,down}_proj    -> layer_{i}/{gate,up,down}/kernel
  {prefix}.embed_tokens, {prefix}.norm           -> embedding, final_norm/scale
`lm_head.weight` must equal the embedding (Gemma ties them); an untied head is refused.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from vlx.convert import mapping as M

# transformers' GemmaConfig defaults for the keys a saved config may leave out.
GEMMA_DEFAULTS = dict(rope_theta=10_000.0, rms_norm_eps=1e-6,
                      hidden_activation="gelu_pytorch_tanh", attention_bias=False)


def decoder_fields(cfg: Mapping[str, Any]) -> Dict[str, Any]:
  """A HF Gemma config -> GemmaDecoder's fields (one clear error for what it cannot take)."""
  given = {k: v for k, v in cfg.items() if v is not None}
  cfg = dict(GEMMA_DEFAULTS, **given)
  # transformers 4 names the activation `hidden_activation`, 5 `hidden_act` (where Gemma's
  # legacy "gelu" means tanh GELU); the default stands only when neither is given. 5 also moves
  # rope_theta into `rope_parameters`.
  act = given.get("hidden_activation") or given.get("hidden_act") or "gelu_pytorch_tanh"
  act = "gelu_pytorch_tanh" if act == "gelu" else act
  rope = (given.get("rope_parameters") or {}).get("rope_theta")
  if rope is not None and "rope_theta" not in given:
    cfg["rope_theta"] = rope
  if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
    raise M.ConversionError(f"Gemma hidden_activation {act!r}: vlx's GemmaDecoder is GeGLU "
                            "with tanh-approximated GELU")
  if cfg.get("attention_bias"):
    raise M.ConversionError("Gemma attention_bias=True: vlx's GemmaDecoder has no biases")
  heads = cfg["num_attention_heads"]
  return dict(vocab_size=cfg["vocab_size"], width=cfg["hidden_size"],
              depth=cfg["num_hidden_layers"], num_heads=heads,
              num_kv_heads=cfg.get("num_key_value_heads") or heads,
              head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
              mlp_dim=cfg["intermediate_size"], rope_theta=float(cfg["rope_theta"]),
              eps=float(cfg["rms_norm_eps"]))


def rules(fields: Mapping[str, Any], prefix: str = "model") -> List[M.Rule]:
  """HF state-dict keys <-> flat GemmaDecoder paths."""
  r = [M.copy(f"{prefix}.embed_tokens.weight", "embedding"),
       M.copy(f"{prefix}.norm.weight", "final_norm/scale")]
  for i in range(fields["depth"]):
    s, d = f"{prefix}.layers.{i}", f"layer_{i}"
    r.append(M.copy(f"{s}.input_layernorm.weight", f"{d}/ln_attn/scale"))
    r.append(M.copy(f"{s}.post_attention_layernorm.weight", f"{d}/ln_mlp/scale"))
    r += M.heads_in(f"{s}.self_attn.q_proj", f"{d}/attn/query", fields["num_heads"], bias=False)
    for proj, name in (("k_proj", "key"), ("v_proj", "value")):
      r += M.heads_in(f"{s}.self_attn.{proj}", f"{d}/attn/{name}", fields["num_kv_heads"],
                      bias=False)
    r += M.heads_out(f"{s}.self_attn.o_proj", f"{d}/attn/out", fields["num_heads"], bias=False)
    for proj in ("gate", "up", "down"):
      r += M.linear(f"{s}.mlp.{proj}_proj", f"{d}/{proj}", bias=False)
  return r


def import_state(cfg: Mapping[str, Any], state: Mapping[str, Any],
                 prefix: str = "model") -> Tuple[Dict[str, Any], dict]:
  """HF config dict + state dict (torch tensors or arrays) -> (GemmaDecoder fields, params)."""
  fields = decoder_fields(cfg)
  state = {k: M.to_numpy(v) for k, v in state.items()}
  head = state.pop("lm_head.weight", None)
  if head is not None and not np.array_equal(head, state[f"{prefix}.embed_tokens.weight"]):
    raise M.ConversionError("lm_head.weight differs from the input embedding: vlx's "
                            "GemmaDecoder ties them")
  flat = M.import_params(state, rules(fields, prefix))
  return fields, M.unflatten(flat)
