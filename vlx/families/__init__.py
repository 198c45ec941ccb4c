"""Model families: each a package holding what is its own (model, task, objectives,
evaluators, presets) over the shared layers, losses, data and evaluation helpers.

The core (vlx/train, vlx/parallel, vlx/registry.py, vlx/build.py) imports none of them;
vlx/components.py lists their modules for the registry. docs/adding_a_family.md walks
through adding one.
"""
