"""weightsteer: steer language models in weight space (Fierro & Roger 2025, arXiv 2511.05408)."""

from . import probes
from .behaviours import Behaviour, load_behaviour
from .delta import LowRank, WeightDelta
from .errors import WeightsteerError
from .models import load_model
from .steer import save_steered, steer

__all__ = ["Behaviour", "LowRank", "WeightDelta", "WeightsteerError", "load_behaviour", "load_model", "probes",
           "save_steered", "steer"]
