"""persona-interp core: models, neuron capture, streaming statistics, neuron diffing and interventions.

The Python API (docs/api.md) is three functions, each doing what its command does and able to write the
same run directory:

    import interp
    lm = interp.load("smollm2-135m")                                   # a LoadedModel
    result = interp.diff(base, finetuned, "persona-demo")               # ranked neurons, statistics, summary
    report = interp.ablate(finetuned, result.neurons.top(10), "persona-demo")

Importing the package changes nothing in the process's environment; the ``interp`` command forbids hub access
for its own process (``interp.offline``).
"""

from interp.api import AblationResult, DiffResult, ablate, diff, load

__all__ = ["AblationResult", "DiffResult", "ablate", "diff", "load"]
