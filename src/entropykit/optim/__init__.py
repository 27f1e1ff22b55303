"""The cross-entropy method (CEM) for optimisation, planning and rare events."""

from entropykit.optim.gaussian import (
    CEM,
    CEMState,
    OptimizeResult,
    cem_ask,
    cem_init,
    cem_tell,
    linear_noise,
    minimize,
)

__all__ = ["CEM", "CEMState", "OptimizeResult", "cem_ask", "cem_init", "cem_tell", "linear_noise", "minimize"]
