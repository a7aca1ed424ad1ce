"""Load shapes as pure functions (loadtest/profiles.py; shapes.py wraps them for Locust)."""

from __future__ import annotations

from orpo_deploy.loadtest.profiles import hold, ramp, soak, spike


def users_over(profile, users=8, rate=2.0, run_time=100.0):
    return [None if (tick := profile(t, users, rate, run_time)) is None else tick[0] for t in range(0, 101, 10)]


def test_hold_keeps_all_users_until_the_run_time():
    assert users_over(hold) == [8] * 10 + [None]
    assert hold(5, 8, 2.0, 100) == (8, 2.0)


def test_ramp_climbs_in_four_steps():
    assert users_over(ramp) == [2, 2, 2, 4, 4, 6, 6, 6, 8, 8, None]
    assert ramp(0, 1, 1.0, 100)[0] == 1  # never zero users


def test_spike_bursts_between_40_and_60_percent_then_recovers():
    assert users_over(spike) == [2, 2, 2, 2, 8, 8, 2, 2, 2, 2, None]
    assert spike(45, 8, 1.0, 100) == (8, 8.0)  # the burst arrives at once


def test_soak_warms_up_over_a_tenth_of_the_run_then_holds():
    assert [soak(t, 8, 2.0, 100)[0] for t in (0, 2.5, 5, 9.9, 10, 99)] == [1, 2, 4, 8, 8, 8]
    assert soak(100, 8, 2.0, 100) is None
