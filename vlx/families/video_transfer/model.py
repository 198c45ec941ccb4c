"""The transfer model: a CLIP (image tower `img`, `img_proj`, text tower `txt`, `txt_proj`,
`logit_scale`, the names of vlx's two-tower model, so a CLIP checkpoint loads by name) read
frame by frame, and a temporal module (`temporal`) on its frame embeddings.

The frames fold into the batch (`[B * T, H, W, 3]`), so the image tower runs unchanged and the
batch stays sharded on `data`. Its outputs are the two-tower keys (`img_emb` holds the video),
so the shared contrastive objectives and the video evaluators work as they are. Frozen vs
tuned is the optimizer's regex parameter groups (LiT); `frozen_image` also stops gradients at
the frame embeddings, which spares the frozen paradigm the image tower's backward pass.
"""

from __future__ import annotations

from typing import Any

from vlx import registry
from vlx.families.video_transfer.temporal import build_temporal
from vlx.families.video_transfer.tower import fold_frames, image_tower, through_time
from vlx.models.joint import JointSpace
from vlx.models.layers import DTYPES, l2_normalize
from vlx.models.video import order_free_mean


@registry.MODELS.register("video_transfer")
class VideoTransfer(JointSpace):
  """`image`: the image ViT's fields; `adapter`: {kind: none | st_adapter | aim | xclip | vpt,
  its fields}; `temporal`: {kind: mean | seq_transformer | mit | evl, its fields}; `text`: the
  text tower's (`text_prompts`: JointSpace's)."""
  image: Any = None
  image_projection: str = "linear"
  adapter: Any = None
  temporal: Any = None
  frozen_image: bool = False

  def setup(self):
    self.setup_joint_space()
    adapter = dict(self.adapter or {})
    self._adapter_kind = adapter.pop("kind", "none")
    self._adapter_fields = adapter
    self.img_tower = image_tower(self.image, (self._adapter_kind, adapter), DTYPES[self.dtype],
                                 temporal=self.temporal, **self.image_tower_fields())
    self.img_proj = self.projection(self.image_projection, "img_proj")
    self.temporal_module = build_temporal(**dict(self.temporal or {}), dtype=DTYPES[self.dtype],
                                          name="temporal")

  def image_tower_fields(self) -> dict:
    """ViT fields a subclass needs beyond the config's (X-CLIP: pre-norm tokens)."""
    return {}

  def encode_image(self, image):
    """The image model alone (a still frame), as the two-tower model embeds it."""
    pooled = self.img_tower(image)[0]
    return self.embed(pooled, self.img_proj)

  def frame_features(self, video, frame_mask=None, with_tokens: bool = False):
    """`video [B, T, H, W, 3]` -> projected, unnormalised frame embeddings `[B, T, E]` (and,
    `with_tokens`, the tower's patch tokens `[B * T, N, width]`, or the states of the blocks
    the temporal module reads)."""
    feats, tokens = fold_frames(self.img_tower, self.img_proj, video, frame_mask,
                                (self._adapter_kind, self._adapter_fields), self.frozen_image)
    return (feats, tokens) if with_tokens else feats

  def video_features(self, video, frame_mask=None):
    """-> (the video embedding `[B, E]`: frame embeddings through the temporal module, each
    L2-normalised, averaged over the real frames in an order-free way (CLIP4Clip), normalised
    again; the frame embeddings `[B, T, E]` it started from, what a cross-encoder reads)."""
    mask = None if frame_mask is None else frame_mask.astype(bool)
    feats, tokens = self.frame_features(video, mask, with_tokens=True)
    timed = through_time(self.temporal_module, feats, mask, tokens)
    return l2_normalize(order_free_mean(l2_normalize(timed), mask)), feats

  def encode_video(self, video, frame_mask=None):
    return self.video_features(video, frame_mask)[0]

  def __call__(self, batch, train: bool = True):
    del train
    return self.joint_outputs(self.encode_video(batch["video"], batch.get("frame_mask")),
                              self.encode_text(batch["text"]))
