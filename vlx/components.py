"""The built-in component modules: importing one registers its models, objectives,
evaluators, datasets, preprocessing ops, curricula or tasks (vlx/registry.py).

A plain list of module paths that `registry` imports on its first lookup, so the core never
imports a component (nor a family) and no import circle runs through the registry. A new
built-in module that registers something is added here; a module outside vlx is named by
the config's `imports` instead.
"""

MODULES = (
    # shared: losses, evaluators, datasets and preprocessing ops, curricula, the default task
    "vlx.objectives.contrastive",
    "vlx.objectives.captioning",
    "vlx.objectives.prefix_lm",
    "vlx.objectives.policy_gradient",
    "vlx.evals.zeroshot",
    "vlx.evals.retrieval",
    "vlx.evals.linear_probe",
    "vlx.evals.captioning",
    "vlx.data.sources",
    "vlx.data.pp_ops",
    "vlx.data.scene_qa",
    "vlx.data.vqa_v2",
    "vlx.data.ref_coco",
    "vlx.data.video_data",
    "vlx.train.curriculum",
    "vlx.train.task",
    # the model families (vlx/families/<family>/)
    "vlx.families.dual_encoder.model",
    "vlx.families.coca.model",
    "vlx.families.fusion.model",
    "vlx.families.fusion.objectives",
    "vlx.families.fusion.evals",
    "vlx.families.fusion.task",
    "vlx.families.video.model", "vlx.families.video.evals",
    "vlx.families.unified.model", "vlx.families.unified.tasks", "vlx.families.unified.evals",
    "vlx.families.video.mae", "vlx.families.video.qa", "vlx.families.video.qa_evals",
    "vlx.data.video_files", "vlx.families.video.classify",
    "vlx.families.video_lmm.verifiers", "vlx.families.video_lmm.reasoning_data",
    "vlx.families.video_lmm.tasks", "vlx.families.video_lmm.evals",
    "vlx.families.video_lmm.grpo",
    "vlx.families.video_transfer.cross_encoder",
    "vlx.families.video_transfer.model",
    "vlx.families.video_transfer.tower",
    "vlx.families.video_transfer.xclip",
)
