"""``wps-sam demo``: WPS-SAM on ToyParts against its oracle and baselines (see :mod:`.runner`)."""

from .runner import run_demo
from .settings import QUICK_SETTINGS, DemoSettings

__all__ = ["QUICK_SETTINGS", "DemoSettings", "run_demo"]
