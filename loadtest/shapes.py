"""Locust ``LoadTestShape`` classes for the profiles in ``loadtest/profiles.py``: hold, ramp, spike, soak.

The locustfile binds one of them when ``LOADTEST_SHAPE`` is set (``orpo-loadtest --shape`` sets it); Locust
only runs shape classes it finds in the locustfile's namespace. They read ``--users``, ``--spawn-rate`` and
``--run-time`` (``use_common_options``), so the same flags drive every shape.
"""

from __future__ import annotations

from locust import LoadTestShape

from orpo_deploy.loadtest.profiles import PROFILES, Profile, Tick


class _ProfileShape(LoadTestShape):
    abstract = True
    use_common_options = True
    profile: Profile

    def tick(self) -> Tick:
        options = self.runner.environment.parsed_options
        if not options.run_time:
            raise ValueError(f"the {type(self).__name__} shape needs --run-time")
        return type(self).profile(
            self.get_run_time(), options.num_users or 1, options.spawn_rate or 1.0, options.run_time
        )


class HoldShape(_ProfileShape):
    profile = staticmethod(PROFILES["hold"])


class RampShape(_ProfileShape):
    profile = staticmethod(PROFILES["ramp"])


class SpikeShape(_ProfileShape):
    profile = staticmethod(PROFILES["spike"])


class SoakShape(_ProfileShape):
    profile = staticmethod(PROFILES["soak"])


SHAPES: dict[str, type[LoadTestShape]] = {"hold": HoldShape, "ramp": RampShape, "spike": SpikeShape, "soak": SoakShape}
