"""Software stacks as data: what a framework runs for a model, and the host behaviour it has.

A run config names a stack (``stack: megatron-te``); its fields set the training knobs that belong
to the framework rather than to the run (attention implementation, eager host costs, gradient-sync
overlap), and any of them can still be overridden under ``training:``. Presets are YAML files in
``simulator/stacks/presets/`` with their sources; adding a stack is adding a file.
"""

from typing import Annotated

from pydantic import BeforeValidator

from simulator.stacks.spec import DEFAULT_SERVING_STACK, DEFAULT_STACK, StackSpec, get_stack, list_stacks

#: The ``stack:`` field of a run config: a preset name, an inline mapping or a StackSpec.
StackField = Annotated[StackSpec, BeforeValidator(get_stack)]

__all__ = ["DEFAULT_SERVING_STACK", "DEFAULT_STACK", "StackField", "StackSpec", "get_stack", "list_stacks"]
