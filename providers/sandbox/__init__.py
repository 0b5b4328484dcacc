"""The provider sandbox: namespaces, Landlock, seccomp and limits around one provider run.

Shared by the appliance and the BootOS agent, so everything under this package uses the
Python standard library and ctypes only, and must never import from appliance/.
"""

from providers.sandbox.limits import Limits
from providers.sandbox.runner import RunResult, SandboxSettings, probe, run

__all__ = ["Limits", "RunResult", "SandboxSettings", "probe", "run"]
