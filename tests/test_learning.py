"""Each model family learns: a few dozen steps of its recipe on the small synthetic-shapes set
reach well above chance on the family's own held-out metric.

The smoke tests pass a model that outputs constants; these do not. Each case trains through
the public entry point (`vlx.train.trainer.train`) with its `configs/<family>.py:tiny,smoke`
config and a few overrides that make it small and fast (thinner towers, one evaluator on part
of the test split, one layer a tower: a tower's layers are one Block in a loop, and the
run's cost is mostly its train step's compile and its 40 steps, both about linear in depth),
so a regression in a family's model, loss, data or optimizer wiring fails here, in CI, rather
than in a 15-minute run. Each case fails with `optimizer.lr=0`: the figures measured at lr=0
and trained (40 steps, seed 0) are next to the thresholds.
The fusion case trains UNITER's VQA head alone (its other five passes would triple the cost):
in 40 steps it learns the answers' distribution per question, well above chance, not yet
the image (the question-only baseline, ~0.35, takes the full 700-step recipe to beat).
"""

import dataclasses
import time
from typing import Dict, Tuple

import pytest

from vlx import config_lib
from vlx.train import trainer
from vlx_testlib import REPO, shapes_data_dir  # noqa: F401  (fixture)

# A short run of every case: 40 steps of 32 examples, warm-up over the first 5, one evaluation
# at the end, no intermediate checkpoint.
SHORT_RUN = {"total_steps": "40", "batch_size": "32", "log_every": "20", "eval_every": "40",
             "checkpoint_every": "40", "optimizer.warmup_steps": "5"}


@dataclasses.dataclass(frozen=True)
class Case:
  """A family's learning check: the config, what makes it small, the metric and its floor."""
  config: str
  overrides: Dict[str, str]
  metric: str
  threshold: float
  chance: str  # what an untrained model scores (measured with optimizer.lr=0), and why

  def load(self, data_dir, extra: Tuple[Tuple[str, str], ...] = ()):
    config = config_lib.load_config_file(str(REPO / "configs" / self.config))
    return config_lib.apply_overrides(config, [
        ("data.source.data_dir", data_dir), *SHORT_RUN.items(), *self.overrides.items(),
        *extra])


CASES = {
    # Zero-shot colour of the salient object from 8 colour prompts: chance 1/8.
    "dual_encoder": Case(
        "clip.py:tiny,smoke",
        {"curriculum": "{}",  # the recipe hides colour for its first 40% of steps
         "model.image.depth": "1", "model.text.depth": "1",
         "evals": "{'zeroshot': {'type': 'zeroshot', 'attributes': {'colour': 0}}}"},
        metric="zeroshot/colour_acc", threshold=0.5,
        chance="chance 0.125 (8 colours); 0.207 at lr=0, 0.848 trained"),
    # CIDEr of greedy captions of 64 test images: an untrained decoder emits no caption words.
    "coca": Case(
        "coca.py:tiny,smoke",
        {"model.image.depth": "1", "model.text.unimodal_depth": "1",
         "model.text.multimodal_depth": "1",
         "evals": ("{'captioning': {'type': 'captioning', 'methods': ('greedy',), 'limit': 64, "
                   "'max_len': 32, 'meteor': False, 'spice': False, 'gallery': 0}}")},
        metric="captioning/cider", threshold=0.2,
        chance="0.000 at lr=0 (no n-gram of the references), 0.422 trained"),
    # VQA soft accuracy over 21 answers on 128 test questions (UNITER's single stream).
    "fusion": Case(
        "uniter.py:tiny,smoke",
        {"model.image.depth": "1", "model.fusion.text_depth": "1",
         "model.tasks": "('vqa',)", "objectives": "{'vqa': {'weight': 1.0}}",
         "evals": "{'vqa': {'type': 'vqa', 'limit': 128}}"},
        metric="vqa/accuracy", threshold=0.25,
        chance="0.055 at lr=0 (21 answers), 0.352 trained"),
}


def train_and_score(case: Case, data_dir, workdir, extra=()) -> Tuple[float, float]:
  """(the case's metric after training, seconds) for `case` (with `extra` overrides)."""
  config = case.load(data_dir, extra)
  start = time.time()
  final = trainer.train(config, str(workdir))
  assert case.metric in final, (case.metric, sorted(final))
  return final[case.metric], time.time() - start


@pytest.mark.parametrize("family", list(CASES))
def test_family_learns_well_above_chance(family, shapes_data_dir, tmp_path):  # noqa: F811
  case = CASES[family]
  score, seconds = train_and_score(case, shapes_data_dir, tmp_path / "run")
  assert score >= case.threshold, (
      f"{family} ({case.config}): {case.metric} = {score:.3f} after "
      f"{SHORT_RUN['total_steps']} steps, below {case.threshold} (untrained: {case.chance}); "
      f"{seconds:.0f} s")
