"""mace-torch's trainer (``mace.cli.run_train``) with one change for one-layer models.

``python -m ionraman._mace_train [--nonlinear-readout] <run_train arguments>``

Why: mace-torch gives every interaction but the last a linear readout and the last one
``NonLinearReadoutBlock(MLP_irreps)``; in a model with a single interaction that one layer
counts as the first, so ``--MLP_irreps`` is silently unused and the site energy is a *linear*
function of the layer's body-ordered invariant features (16 for the distilled default).
``--nonlinear-readout`` gives such a model the readout mace-torch gives the last layer of a
deeper one (linear → ``MLP_irreps`` with the gate → linear). It acts once per atom, not per
edge, so its cost in MD is negligible (docs/physics/distillation.md). The trained model is
an ordinary mace ``ScaleShiftMACE`` whose ``readouts[0]`` is mace's own
``NonLinearReadoutBlock``: loading it needs nothing from this module.
"""

from __future__ import annotations

import functools
import inspect
import sys

FLAG = "--nonlinear-readout"


def mlp_readout(linear_readout, MLP_irreps, gate, heads, cueq_config=None, oeq_config=None):  # type: ignore[no-untyped-def]
    """mace's ``NonLinearReadoutBlock`` in place of a one-layer model's ``LinearReadoutBlock``
    (the arguments as ``mace.modules.models.MACE.__init__`` receives them)."""
    from e3nn import o3
    from mace.modules import blocks

    heads = heads or ["Default"]
    return blocks.NonLinearReadoutBlock(
        linear_readout.linear.irreps_in, (len(heads) * o3.Irreps(MLP_irreps)).simplify(), gate,
        o3.Irreps(f"{len(heads)}x0e"), len(heads), cueq_config, oeq_config,
    )


def _patch_one_layer_readout() -> None:
    import mace  # noqa: F401  (first: it lets torch ≥ 2.6 unpickle e3nn's constants, which e3nn loads on import)
    from mace.modules import blocks, models

    original = models.MACE.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        if len(self.interactions) != 1 or not isinstance(self.readouts[0], blocks.LinearReadoutBlock):
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        self.readouts[0] = mlp_readout(self.readouts[0], a["MLP_irreps"], a["gate"], a["heads"], a["cueq_config"], a["oeq_config"])

    models.MACE.__init__ = init


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if FLAG in args:
        args.remove(FLAG)
        _patch_one_layer_readout()
    from mace.cli.run_train import main as run_train

    sys.argv = ["mace_run_train", *args]
    run_train()


if __name__ == "__main__":
    main()
