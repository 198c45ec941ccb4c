"""The video-text dual encoder: a video tower (ViViT, TimeSformer or the time-blind FrameMean)
and the text tower, projected into one space with a learned temperature.

It returns the two-tower model's keys (`img_emb` holds the video embedding), so the shared
contrastive objectives (`clip`, `siglip`) train it unchanged; the batch carries `video`
[B, T, H, W, 3] in [-1, 1] (and, for padded clips, `frame_mask` [B, T]) instead of `image`.
"""

from __future__ import annotations

from typing import Any

from vlx import registry
from vlx.models.joint import JointSpace
from vlx.models.layers import DTYPES
from vlx.models.video import build_video_tower


@registry.MODELS.register("video_text")
class VideoText(JointSpace):
  """`video`: the tower's `kind` (vivit | timesformer | frame_mean) and its fields (for
  frame_mean, the image ViT's); `text`: the TextTransformer's fields. Outputs L2-normalized
  `img_emb` (the video) and `txt_emb`, the learned log temperature `logit_scale` and, with
  `bias_init`, SigLIP's `logit_bias`."""
  video: Any = None
  video_projection: str = "linear"

  def setup(self):
    self.setup_joint_space()
    fields = dict(self.video)
    kind = fields.pop("kind")
    # Named by the attribute (`video_tower`): frame_mean passes every field but the dtypes on
    # to its image ViT, so a `name` cannot go through build_video_tower.
    self.video_tower = build_video_tower(kind, **fields, dtype=DTYPES[self.dtype])
    self.video_proj = self.projection(self.video_projection, "video_proj")

  def encode_video(self, video, frame_mask=None):
    pooled, _ = self.video_tower(video, frame_mask)
    if pooled is None:
      raise ValueError("model.video.pool='none' gives no pooled embedding to project")
    return self.embed(pooled, self.video_proj)

  def __call__(self, batch, train: bool = True):
    del train  # no dropout
    return self.joint_outputs(self.encode_video(batch["video"], batch.get("frame_mask")),
                              self.encode_text(batch["text"]))
