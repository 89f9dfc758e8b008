"""The command line and the Python API agree: every flag's default is its config field's default, and every
sampling command offers all of interp.run_options.SamplingOptions."""

from __future__ import annotations

import dataclasses

import click
import pytest

from cli import app
from finetune.evaluate import EvaluateConfig
from finetune.explain import ExplainConfig
from finetune.generate import GenerateConfig
from finetune.mend import EditConfig, MendConfig
from finetune.persona_vector import PersonaVectorConfig
from finetune.training import TrainConfig
from interp.ablation import AblationConfig
from interp.attribution import AttributionConfig
from interp.diff_neurons import DiffConfig
from interp.lens import LensConfig
from interp.run_options import SamplingOptions
from interp.steering import SteerConfig

CONFIGS = {
    "diff-neurons": DiffConfig, "ablate": AblationConfig, "attribute": AttributionConfig, "generate": GenerateConfig,
    "evaluate": EvaluateConfig, "explain": ExplainConfig, "finetune": TrainConfig, "steer": SteerConfig,
    "persona-vector": PersonaVectorConfig, "lens": LensConfig, "mend train": MendConfig, "edit": EditConfig,
}  # fmt: skip
SAMPLING_COMMANDS = ("diff-neurons", "ablate", "generate", "evaluate", "explain", "steer", "lens")


def _command(name: str) -> click.Command:
    """A command by its words (``mend train``: a group's subcommand)."""
    command = app
    for word in name.split():
        command = command.commands[word]
    return command


def _field_defaults(config) -> dict:
    return {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_flag_defaults_are_the_config_defaults(command):
    defaults = _field_defaults(CONFIGS[command])
    context = click.Context(_command(command))
    params = {p.name: p for p in _command(command).params if not p.required}
    shared = [name for name in params if name in defaults]
    assert len(shared) >= 5, shared  # the comparison covers the command's options
    for name in shared:
        default = params[name].get_default(context)
        assert default == defaults[name], f"{command} --{name}: {default!r}"


@pytest.mark.parametrize("command", SAMPLING_COMMANDS)
def test_sampling_commands_offer_every_sampling_option(command):
    assert issubclass(CONFIGS[command], SamplingOptions)
    params = {p.name for p in app.commands[command].params}
    assert {f.name for f in dataclasses.fields(SamplingOptions)} <= params
