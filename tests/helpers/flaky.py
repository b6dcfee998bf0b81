"""A user's model that crashes for one width: drives the sweeper's failure handling."""

from hypersweep.models import MLP


class CrashingMLP(MLP):
    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        if hidden_units == 13:
            raise RuntimeError("unlucky width 13")
        super().__init__(*args, hidden_units=hidden_units, **kwargs)
