"""Image->video transfer: an image-text model (CLIP) read frame by frame, time added on top of
its frozen features or inside its adapted backbone, trained through the one step.

Variants (one paradigm word, mean_pool if none; tiny is the default size, b16 for
accelerators):
  image            the image model the others start from: a CLIP trained on still frames of
                   the synthetic videos (it knows colour and shape, nothing of time)
  mean_pool        frozen: frame embeddings averaged (CLIP4Clip meanP; blind to order)
  seq_transformer  frozen: a temporal transformer over frame embeddings (CLIP4Clip seqTransf)
  evl              frozen: an EVL-style decoder whose queries read every frame's patch tokens
                   (where and when, and through EVL's temporal convolution how each changes
                   from frame to frame) of the image tower's last blocks (one per decoder
                   layer), added to the frame embeddings
  cross_encoder    frozen: seq_transformer's dual encoder shortlists, a cross-encoder (text
                   tokens attending to the frame embeddings, an ITM head trained on hard
                   negatives) re-ranks its top 16 (ALBEF's protocol, for video)
  text_prompt      frozen: text prompt tuning (VideoPrompt-style: learned prompt tokens in
                   every block of the locked text tower) and seqTransf's temporal transformer;
                   both towers and their projections locked
  st_adapter       adapted: ST-Adapter (a temporal depthwise conv in a bottleneck) per block
  aim              adapted: AIM (the frozen attention reused over time, with adapters)
  full_finetune    adapted: every image weight tuned, frames averaged (ViFi-CLIP)
  xclip            adapted: X-CLIP (cross-frame message tokens in every block, a multi-frame
                   integration transformer, video-specific text prompts; all weights tuned)
  vpt              adapted: visual prompt tuning (deep: learned prompt tokens in every block,
                   told apart per frame by a time table; the image weights locked)
Name an adapted paradigm with `seq_transformer` (`:st_adapter,seq_transformer`) to stack
seqTransf's temporal transformer on its adapted frame embeddings instead of their average (as
X-CLIP stacks its MIT): time read inside the tower (where things move) and across the frames
(what happens in which order). Tiny ST-Adapter so stacked adapts the blocks from the second
on (the first stays the image model's, so the step skips its backward pass) and trains at lr
1e-3: the adapted paradigm's recipe past 0.9 on the twins (docs/video_transfer.md).
`:evl,seq_transformer` is the frozen one's: EVL's decoder reads each frame's tokens (after its
temporal convolution) on its own, its output added to that frame's embedding, and seqTransf's
transformer runs over the frames (tiny: lr 1e-3; 0.894 on the twins from the `where` model).
Add `where` to any of them (`:seq_transformer,where`) to start from an image model that also
learns where things are: half of its still frames are captioned by the frame's own caption
(each shape and its region: `still_caption`), the rest by their video's; it trains 3000 steps
(the plain one 1500). Its frame embeddings keep position, which a temporal module needs to
read the direction of motion (with the plain image model direction stays at chance;
docs/video_transfer.md).
Add `qa` to a paradigm (`:seq_transformer,qa`) to fine-tune its video side (image tower,
adapters, temporal module: one token per frame) with the image model's text tower for video
QA and temporal grounding instead: configs/video_qa.py's fusion, heads, data and evaluators
(tiny only: the synthetic videos' questions; X-CLIP's text prompts and the cross-encoder stay
out, they score video-text pairs: `cross_encoder,qa` and `text_prompt,qa` are
seq_transformer's QA model).
Start a paradigm from the image model with `image=DIR` (a vlx CLIP workdir of this config's
towers) or from a converted OpenAI / open_clip / HF CLIP with `clip=DIR` (its towers,
tokenizer and preprocessing; `python -m vlx.convert --src=... --out=DIR`); without either,
a tiny paradigm trains `:image` first, once, in <workdir's parent>/init_runs/ (reused by
every later paradigm run beside it; not when resuming or evaluating).
experiments/compare_video.py trains every paradigm on the same data and step budget. Append
',smoke' for a run of seconds (its image model: `:image,smoke`).
"""

import os

from typing import Optional

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.presets.finetune import preprocess_op, read_converted
from vlx.presets.video import (TINY_MAX_LEN, msrvtt_data, qa_data, qa_evals, qa_objectives,
                               synthetic_video, video_evals, vit_fields)
from vlx.variant import parse_variant

SIZES = ("tiny", "b16")
FROZEN = ("mean_pool", "seq_transformer", "evl", "cross_encoder", "text_prompt")
ADAPTED = ("st_adapter", "aim", "full_finetune", "xclip", "vpt")
# The paradigms that take seqTransf's temporal transformer on top (`:<p>,seq_transformer`): the
# adapted ones but X-CLIP (it has its own, the MIT), and EVL read frame by frame.
STACKABLE = ("evl", "st_adapter", "aim", "full_finetune", "vpt")
WORDS = ("image",) + FROZEN + ADAPTED
# Words beside the paradigm: the QA task, the image model that learns where.
MODIFIERS = ("qa", "where")
# The CLIP params a paradigm takes from the image model (its own temporal parts start fresh;
# adapters inside `img` keep their init: vlx/train/checkpoint.py loads what the image holds).
IMAGE_PARAMS = "img=img,img_proj=img_proj,txt=txt,txt_proj=txt_proj,logit_scale=logit_scale"
# Inside `img`, what the adapted paradigms add and train (the image model has none of it): the
# adapters (VPT's prompts among them: `prompt_adapter`), AIM's temporal position tables and
# X-CLIP's message tokens.
ADAPTER_PARAMS = r"img/.*(_adapter/.*|/time_pos_embedding|/message_.*)"
# In the text tower, text prompt tuning's prompts and gates (vlx/models/prompt_tuning.py).
TEXT_PROMPT_PARAMS = r"txt/.*/prompt_(tokens|gate)"
TEXT_PROMPTS = 8  # per block of the text tower (`text_prompt`)


def image_fields(size: str) -> dict:
  """The image ViT: tiny has a fixed 2-D sinusoid for positions (unit amplitude from the first
  step, as the tiny ViViT), b16 is ViT-B/16."""
  vit = vit_fields(size)
  if size == "tiny":
    vit.update(posemb="sincos2d")
  return vit


def paradigm_model(paradigm: str, size: str, image: Optional[dict] = None,
                   stacked: bool = False) -> dict:
  """`adapter`, `temporal` and `frozen_image` of a paradigm on the `image` ViT's fields (the
  size's, or an imported CLIP's); `stacked`: an adapted one with seqTransf's temporal
  transformer on top, or EVL read frame by frame with it on top (`per_frame`,
  `frames_depth`)."""
  imported = image is not None
  image = image or image_fields(size)
  width = image["width"]
  heads = 4 if size == "tiny" else 8
  temporal = dict(kind="mean")
  adapter = dict(kind="none")
  if paradigm in ("seq_transformer", "text_prompt", "cross_encoder"):
    # A sinusoidal time table: with a zero one the frames start indistinguishable and the
    # module learns order late, if at all (0.506 twins after 1000 steps: docs/video_transfer.md).
    temporal = dict(kind="seq_transformer", depth=2 if size == "tiny" else 4, num_heads=heads,
                    max_frames=16, time_init="sincos")
  elif paradigm == "evl":
    # As EVL: each decoder layer reads one of the tower's last blocks (layers_read = depth).
    depth = 2 if size == "tiny" else 4
    temporal = dict(kind="evl", depth=depth, num_heads=heads, max_frames=16,
                    time_init="sincos", layers_read=depth, time_conv=True, per_frame=False,
                    frames_depth=0)
    if stacked:  # each frame's own tokens read, then seqTransf's transformer over the frames
      temporal.update(per_frame=True, frames_depth=depth)
  elif paradigm == "st_adapter":
    adapter = dict(kind=paradigm, bottleneck=width // 2)
  elif paradigm == "aim":
    adapter = dict(kind=paradigm, bottleneck=width // 4, time_init="sincos")
  elif paradigm == "vpt":  # prompts per block
    adapter = dict(kind=paradigm, num_prompts=8 if size == "tiny" else 16, time_init="sincos")
  elif paradigm == "xclip":  # the paper's: a 1-layer MIT, 2 prompt layers (alpha 0: identity)
    adapter = dict(kind="xclip", message_from="cls" if image.get("pool") == "cls" else "mean",
                   time_init="sincos")
    # The MIT's time table a centred sinusoid (X-CLIP's starts at zero and never learns order).
    temporal = dict(kind="mit", depth=1, num_heads=heads, max_frames=16, act="gelu_tanh",
                    ln_eps=1e-6, time_init="sincos", center_time=True)
    return dict(adapter=adapter, temporal=temporal, frozen_image=False,
                prompt=dict(depth=2, num_heads=heads, alpha_init=0.0, act="gelu_tanh",
                            ln_eps=1e-6, visual_ln_eps=1e-6))
  if stacked and paradigm != "evl":
    temporal = paradigm_model("seq_transformer", size, image)["temporal"]
    if paradigm == "st_adapter" and size == "tiny" and not imported:
      # Adapters from the second block on: the first runs as the image model's, and the step
      # skips its backward pass (STACKED_TINY in docs/video_transfer.md).
      adapter["first_layer"] = 1
  fields = dict(adapter=adapter, temporal=temporal, frozen_image=paradigm in FROZEN)
  if paradigm == "cross_encoder":  # fusion at the text width (vlx/.../cross_encoder.py)
    fields["fusion"] = dict(depth=2 if size == "tiny" else 4, num_heads=heads, max_frames=16)
  return fields


def set_paradigm(c, paradigm: str, size: str, image: Optional[dict] = None,
                 stacked: bool = False) -> None:
  """The paradigm's model fields on `c.model` (its text tower's prompts included)."""
  c.model.update(paradigm_model(paradigm, size, image, stacked))
  if paradigm == "text_prompt":  # the model's, not `text`'s: the image model's text tower
    c.model.text_prompts = TEXT_PROMPTS  # (init_from_run_inherits) stays the same


def frozen_groups(paradigm: str, scope: str = "") -> tuple:
  """LiT-style parameter groups: the frozen paradigms lock the image tower and its projection
  (text_prompt the text tower and its projection too, but for the prompts); ST-Adapter, AIM
  and VPT lock them but for their adapters (VPT's prompts); full fine-tuning locks nothing.
  `scope`: where the image tower sits (`video_tower/` in the QA model)."""
  if paradigm == "text_prompt" and not scope:  # the QA model's text tower has no prompts
    groups = ((TEXT_PROMPT_PARAMS, 1.0), ("txt/.*", 0.0), ("txt_proj/.*", 0.0),
              ("img/.*", 0.0), ("img_proj/.*", 0.0))
  elif paradigm in FROZEN:
    groups = (("img/.*", 0.0), ("img_proj/.*", 0.0))
  elif paradigm in ("st_adapter", "aim", "vpt"):
    groups = ((ADAPTER_PARAMS, 1.0), ("img/.*", 0.0), ("img_proj/.*", 0.0))
  else:
    groups = ()
  return tuple((scope + regex, mult) for regex, mult in groups)


def fresh_params(paradigm: str) -> str:
  """What a paradigm adds to the image model, which starts fresh when that model loads."""
  if paradigm == "text_prompt":
    return f"{ADAPTER_PARAMS}|{TEXT_PROMPT_PARAMS}"
  return ADAPTER_PARAMS


def get_config(arg: str = "mean_pool"):
  variant = parse_variant(arg, sizes=SIZES, words=WORDS + MODIFIERS, keys=("image", "clip"))
  chosen = sorted(set(variant.words) - set(MODIFIERS)) or ["mean_pool"]
  stacked = (len(chosen) == 2 and "seq_transformer" in chosen
             and bool(set(chosen) & set(STACKABLE)))
  if stacked:
    chosen.remove("seq_transformer")
  if sorted(chosen) == ["seq_transformer", "xclip"]:
    raise ValueError(f"video_transfer variant {arg!r}: X-CLIP has its own temporal transformer "
                     f"(the MIT); seq_transformer stacks on {', '.join(STACKABLE)}")
  if len(chosen) != 1:
    raise ValueError(f"video_transfer variant {arg!r} names {len(chosen)} paradigms: "
                     f"name one of {', '.join(WORDS)} (or one of {', '.join(STACKABLE)} "
                     "with seq_transformer)")
  paradigm, size = chosen[0], variant.size
  if "where" in variant.words and (size != "tiny" or {"image", "clip"} & set(variant.values)):
    raise ValueError(f"video_transfer variant {arg!r}: `where` names the tiny image model "
                     "this config trains (not image=DIR, clip=DIR or b16)")
  tiny = size == "tiny"
  c = base.base_config()
  text = image_text.text_tower("tiny" if tiny else "b16", causal=True, pool="eot")
  if tiny:
    text.update(depth=2, max_len=TINY_MAX_LEN)
  c.model = ml_collections.ConfigDict(dict(
      name={"image": "two_tower", "xclip": "xclip",
            "cross_encoder": "video_cross_encoder"}.get(paradigm, "video_transfer"),
      embed_dim=sizes.EMBED_DIM["tiny" if tiny else "b16"], temperature_init=50.0,
      bias_init=None, dtype="float32", image=image_fields(size), text=text))
  c.objectives = ml_collections.ConfigDict(dict(clip=dict(weight=1.0, max_scale=100.0)))
  c.data = synthetic_video(max_len=TINY_MAX_LEN if tiny else 32)
  c.evals = video_evals()
  if paradigm == "cross_encoder":  # ITM on the positives and ITC's hard negatives
    c.objectives.itm = dict(weight=1.0)
  if paradigm == "image":
    # Still frames: a random one of each training video, the central one to evaluate.
    c.data.update(dict(
        keys=("image", "text"), shuffle_block=1,
        pp_train=(f"decode_video|video_frame('random')|value_range(-1,1)|sample_caption|"
                  + ("still_caption(0.5)|" if "where" in variant.words else "")
                  + f"tokenize({c.data.max_len})"),
        pp_eval="decode_video|video_frame('central')|value_range(-1,1)"))
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="retrieval")))
  else:
    set_paradigm(c, paradigm, size, stacked=stacked)
    c.optimizer.param_groups = frozen_groups(paradigm)
    if "clip" in variant.values:
      pass  # from_imported_clip below, once the size's data and schedule are set
    elif "image" in variant.values or tiny:
      # image=DIR names the image model; without it the tiny paradigms train `:image` first
      # (vlx/train/init_run.py: once, beside the workdir, reused by every later paradigm run).
      c.init_from = variant.values.get("image", "")
      if not c.init_from:
        c.init_from_run = (f"{os.path.abspath(__file__)}:image"
                           + (",where" if "where" in variant.words else "")
                           + (",smoke" if variant.smoke else ""))
      c.init_from_run_inherits = ("data.source", "model.image", "model.text",
                                  "model.embed_dim")
      c.init_map = IMAGE_PARAMS
      c.init_fresh = fresh_params(paradigm)

  if tiny:
    # Tiny ST-Adapter with seqTransf stacked on it learns at 1e-3: 0.920 on the twins in 1000
    # steps against 0.852 at 5e-4 (STACKED_TINY in docs/video_transfer.md; from the 1500-step
    # `where` image model).
    # EVL read frame by frame with seqTransf on top: 0.894 at 1e-3 from the 3000-step `where`
    # image model, the clip-level decoder 0.884 at 1e-3 (EVL_STACKED in docs/video_transfer.md).
    # The `where` image model trains 3000 steps: its frozen features then carry direction, and
    # the frozen rows' static R@1 is 2.5-7.5 points higher than after 1500 (EVL_STACKED in
    # docs/video_transfer.md).
    image_steps = 3000 if "where" in variant.words else 1500
    base.cpu_schedule(c, batch_size=64, total_steps=image_steps if paradigm == "image" else 1000,
                      lr=1e-3 if stacked and paradigm in ("st_adapter", "evl") and "clip" not in
                      variant.values else 5e-4)
  else:  # accelerators: MSR-VTT, 8 frames of 224 px, from an imported CLIP (image=DIR)
    c.data = msrvtt_data(frames=8)
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="video_retrieval")))
    c.model.text.update(dict(vocab_size=32_000))
    c.model.dtype = "bfloat16"
    c.model.image.update(dict(scan=False, remat="dots"))
    c.batch_size, c.total_steps = 256, 10_000
    c.optimizer.update(dict(lr=1e-4 if paradigm in ("full_finetune", "xclip") else 5e-4,
                            warmup_steps=500, weight_decay=0.05))
    c.mesh.update(dict(data=1, fsdp=-1))

  if "qa" in variant.words:
    if paradigm == "image" or not tiny or "clip" in variant.values:
      raise ValueError(f"video_transfer variant {arg!r}: qa fine-tunes a paradigm (not the "
                       "image model) of the tiny size from image=DIR or the tiny image model "
                       "(no real video QA reader is registered; clip=DIR is not wired to it)")
    as_qa_task(c, paradigm)

  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c, total_steps=4)
    c.eval_batch_size = 32
    if not tiny:
      base.shrink_for_smoke(c)
    if "qa" in variant.words:
      for name in c.evals:
        c.evals[name].limit = 32
  if "clip" in variant.values:
    if paradigm == "image" or "image" in variant.values:
      raise ValueError("clip=DIR is the image model: name a paradigm (and no image=DIR) to "
                       "start from it")
    from_imported_clip(c, variant.values["clip"], paradigm, size, stacked)
  fit_evl_to_tower(c)
  return c


def fit_evl_to_tower(c) -> None:
  """EVL's decoder has a layer per image block it reads: on a tower shallower than the size's
  decoder (a smoke run's 2 blocks, an imported CLIP's) it reads every block, one layer each."""
  model = c.model.video if "video" in c.model else c.model
  temporal = model.get("temporal")
  if temporal is not None and temporal.get("kind") == "evl":
    depth = min(temporal.depth, model.image.depth)
    temporal.update(dict(depth=depth, layers_read=min(temporal.layers_read, depth)))


def as_qa_task(c, paradigm: str) -> None:
  """`qa`: the paradigm's video side as the video tower of configs/video_qa.py's model
  (`transfer`: vlx/families/video_transfer/tower.py), the image model's text tower as its
  text tower, fusion at the text width; the QA data, objectives and evaluators. The image
  tower, projection and text tower start from the image model; the paradigm's locks hold
  under the tower's scope."""
  m = c.model
  tower = dict(kind="transfer", image=m.image.to_dict(), embed_dim=m.embed_dim,
               width=m.text.width, image_projection=m.get("image_projection", "linear"),
               adapter=m.adapter.to_dict(), temporal=m.temporal.to_dict(),
               frozen_image=m.frozen_image)
  # The QA model tunes its text tower: text prompts (`text_prompt`'s) stay out, so its QA
  # run is seq_transformer's.
  c.model = ml_collections.ConfigDict(dict(
      name="video_qa", video=tower, text=m.text.to_dict(), fusion_depth=2,
      fusion_heads=m.text.num_heads, dtype=m.dtype))
  # The texts take the image model's text positions (its table loads as it is).
  c.data = qa_data(max_len=m.text.max_len)
  c.objectives, c.evals = qa_objectives(), qa_evals()
  c.optimizer.param_groups = frozen_groups(paradigm, scope="video_tower/")
  c.init_map = "video_tower/img=img,video_tower/img_proj=img_proj,txt=txt"
  c.init_fresh = "video_tower/" + ADAPTER_PARAMS
  if c.get("init_from_run"):
    c.init_from_run_inherits = ("data.source", "model.image=model.video.image", "model.text",
                                "model.embed_dim=model.video.embed_dim")
  # Every QA run at 5e-4 (a stacked ST-Adapter's or EVL's too: their 1e-3 was chosen on the
  # twins).
  base.cpu_schedule(c, batch_size=32, total_steps=1000, lr=5e-4)


def from_imported_clip(c, path: str, paradigm: str, size: str, stacked: bool = False) -> None:
  """`clip=DIR`: the towers, temperature, tokenizer and frame preprocessing of a converted
  CLIP or SigLIP (`python -m vlx.convert --src=... --out=DIR`; OpenAI, open_clip, HF), which
  the paradigm starts from (its new parts fresh)."""
  path = os.path.abspath(os.path.expanduser(path))
  meta = read_converted(path, f"clip={path}")
  if meta["model"].get("name") != "two_tower":
    raise ValueError(f"clip={path}: expected a converted CLIP / SigLIP, not a "
                     f"{meta['model'].get('name')!r} model")
  imported = meta["model"]
  remat = {tower: c.model[tower].get("remat", "none") for tower in ("image", "text")}
  for key in ("image", "text", "embed_dim", "temperature_init", "bias_init",
              "image_projection", "text_projection"):
    if key in imported:
      c.model[key] = imported[key]
  for tower, policy in remat.items():  # the size's memory policy, not the checkpoint's
    c.model[tower].remat = policy
  # The paradigm's adapters and X-CLIP's message source follow the imported ViT.
  set_paradigm(c, paradigm, size, dict(imported["image"]), stacked)
  if c.data.name == "msrvtt":  # decode at the checkpoint's frame size
    decoded = msrvtt_data(frames=c.data.num_frames, image_size=meta["image_size"])
    c.data.update(dict(pp_train=decoded.pp_train, pp_eval=decoded.pp_eval))
  if imported.get("bias_init") is not None:
    c.objectives = ml_collections.ConfigDict(dict(siglip=dict(weight=1.0)))
    if paradigm == "cross_encoder":
      c.objectives.itm = dict(weight=1.0)
  pp = meta["preprocess"]
  frames = preprocess_op(pp, "preprocess_video")
  c.data.update(dict(image_size=meta["image_size"], max_len=meta["max_len"],
                     tokenizer=meta["tokenizer"], pretrained_preprocess=pp))
  for key in ("pp_train", "pp_eval"):
    ops = [op for op in c.data[key].split("|") if not op.startswith("video_value_range")]
    ops.insert(1, frames)
    c.data[key] = "|".join(op if not op.startswith("tokenize(") else
                           f"tokenize({meta['max_len']})" for op in ops)
  c.init_from, c.init_map, c.init_fresh = path, IMAGE_PARAMS, fresh_params(paradigm)
