"""persona-interp core: models, neuron capture, streaming statistics, neuron diffing and interventions.

The Python API (docs/api.md) is four functions, each doing what its command does and able to write the
same run directory:

    import interp
    lm = interp.load("smollm2-135m")                                   # a LoadedModel
    result = interp.diff(base, finetuned, "persona-demo")               # ranked neurons, statistics, summary
    report = interp.ablate(finetuned, result.neurons.top(10), "persona-demo")
    steered = interp.steer(base, "runs/pv-ext", layer=20, coeffs=[-4, 4], prompts="persona-demo")

Persona vectors come from ``finetune.persona_vector.run_persona_vector`` (``interp persona-vector``).

Importing the package changes nothing in the process's environment; the ``interp`` command forbids hub access
for its own process (``interp.offline``).
"""

from interp.api import AblationResult, DiffResult, ablate, diff, load, steer

__all__ = ["AblationResult", "DiffResult", "ablate", "diff", "load", "steer"]
