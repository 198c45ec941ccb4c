"""COCO-style box average precision, pure numpy (pycocotools' protocol, without its files).

Per class and IoU threshold: detections of every image sorted by score, each matched greedily
to the unmatched ground-truth box of its image with the highest IoU at or above the threshold;
precision made monotone from the right and read at 101 recall points; classes with no
ground truth are left out of the mean. AP is the mean over IoU 0.50:0.05:0.95, AP50 at 0.5.
`tests/test_unified.py` checks it against pycocotools' COCOeval.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes a [N, 4] and b [M, 4] (y0, x0, y1, x1) -> [N, M]."""
  a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
  return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def _class_ap(dets, gts, threshold: float) -> float:
  """dets: [(image, score, box)], gts: {image: boxes [K, 4]} of one class."""
  total = sum(len(g) for g in gts.values())
  order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # stable, as COCOeval's sort
  used = {img: np.zeros(len(g), bool) for img, g in gts.items()}
  tp = np.zeros(len(order))
  for rank, i in enumerate(order):
    img, _, box = dets[i]
    g = gts.get(img)
    if g is None or not len(g):
      continue
    ious = iou_matrix(box, g)[0]
    ious[used[img]] = -1.0
    best = int(np.argmax(ious))
    if ious[best] >= threshold:
      used[img][best] = True
      tp[rank] = 1
  tps = np.cumsum(tp)
  recall = tps / total
  precision = tps / np.arange(1, len(tp) + 1)
  precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
  idx = np.searchsorted(recall, RECALL_POINTS, side="left")
  return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def box_ap(detections: Sequence, ground_truth: Sequence,
           thresholds: Sequence[float] = IOU_THRESHOLDS) -> Dict[str, float]:
  """`detections[i]`: (boxes [D, 4], scores [D], classes [D]) of image i; `ground_truth[i]`:
  (boxes [G, 4], classes [G]) -> {'ap': mean over thresholds and classes, 'ap50', 'ap75'
  (when those thresholds are among `thresholds`), 'ap_at': per threshold}."""
  classes = sorted({int(c) for _, cls in ground_truth for c in np.asarray(cls).reshape(-1)})
  per_threshold = []
  for t in thresholds:
    aps = []
    for c in classes:
      dets = [(i, float(s), np.asarray(b)) for i, (boxes, scores, cls) in enumerate(detections)
              for b, s, k in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1),
                                 np.asarray(cls).reshape(-1)) if int(k) == c]
      gts = {i: np.asarray(boxes).reshape(-1, 4)[np.asarray(cls).reshape(-1) == c]
             for i, (boxes, cls) in enumerate(ground_truth)}
      aps.append(_class_ap(dets, gts, float(t)))
    per_threshold.append(float(np.mean(aps)) if aps else 0.0)
  out = {"ap": float(np.mean(per_threshold)), "ap_at": dict(zip(map(float, thresholds),
                                                                  per_threshold))}
  for name, t in (("ap50", 0.5), ("ap75", 0.75)):
    hit = [p for th, p in zip(thresholds, per_threshold) if abs(th - t) < 1e-9]
    if hit:
      out[name] = hit[0]
  return out


def box_or_class(detections: Sequence, ground_truth: Sequence) -> Dict[str, float]:
  """Whether a detector misses boxes or names: 'ap50_class_agnostic' (AP50 with every class
  one: the boxes alone), 'found_at_iou50' (the share of ground-truth objects some detection
  covers at IoU >= 0.5) and 'class_accuracy_at_iou50' (of those, the share whose
  best-overlapping detection names the right class; absent when none is found). Arguments as
  `box_ap`'s."""
  threshold = 0.5
  one = lambda c: np.zeros(np.asarray(c).reshape(-1).shape, np.int32)  # noqa: E731
  agnostic = box_ap([(b, s, one(c)) for b, s, c in detections],
                    [(b, one(c)) for b, c in ground_truth], (threshold,))["ap_at"][threshold]
  objects = found = named = 0
  for (boxes, _, cls), (gt_boxes, gt_cls) in zip(detections, ground_truth):
    boxes, cls = np.asarray(boxes).reshape(-1, 4), np.asarray(cls).reshape(-1)
    gt_boxes, gt_cls = np.asarray(gt_boxes).reshape(-1, 4), np.asarray(gt_cls).reshape(-1)
    objects += len(gt_boxes)
    if not len(boxes) or not len(gt_boxes):
      continue
    ious = iou_matrix(boxes, gt_boxes)
    best = ious.argmax(0)
    hit = ious[best, np.arange(len(gt_boxes))] >= threshold
    found += int(hit.sum())
    named += int((hit & (cls[best] == gt_cls)).sum())
  out = {"ap50_class_agnostic": float(agnostic), "found_at_iou50": found / max(objects, 1)}
  if found:
    out["class_accuracy_at_iou50"] = named / found
  return out
