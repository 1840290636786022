"""The fleet's clock (worker/runtime/fleet_clock.py): Redis's time, carried by the monotonic clock,
so a worker whose wall clock steps judges deliveries as the others do."""

from __future__ import annotations

import time

import pytest
import redis
from kombu.transport import redis as kombu_redis

from cli.embedded_redis import EmbeddedRedis
from worker.runtime.fleet_clock import CLOCK, MAX_SYNC_ROUND_TRIP_S, FleetClock, use_for_kombu


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False)
    yield redis.Redis.from_url(server.start())
    server.stop()


def test_the_clock_is_redis_time_and_no_wall_clock_step_moves_it(client, monkeypatch):
    clock = FleetClock()
    clock.sync(client)
    seconds, microseconds = client.time()
    assert abs(clock.now() - (seconds + microseconds / 1e6)) < 0.5
    before = clock.now()
    monkeypatch.setattr(time, "time", lambda: 10_000_000_000.0)  # the wall clock steps far ahead
    assert 0 <= clock.now() - before < 0.5


def test_kombu_stamps_and_sweeps_deliveries_by_it():
    use_for_kombu()
    assert kombu_redis.time == CLOCK.now


class _HeldAnswer:
    """A real client whose TIME answer is held on the way back, as a partition that heals holds it."""

    def __init__(self, client: redis.Redis, held_s: float) -> None:
        self.client, self.held_s = client, held_s

    def time(self) -> tuple[int, int]:
        time.sleep(self.held_s)  # the fault: the round trip takes this long (nothing is awaited)
        return self.client.time()  # Redis's time as the answer arrives


def test_a_read_held_by_the_network_does_not_move_the_clock_ahead(client):
    clock = FleetClock()
    clock.sync(client)
    clock.sync(_HeldAnswer(client, MAX_SYNC_ROUND_TRIP_S + 0.2))  # its midpoint would be 0.6 s off
    seconds, microseconds = client.time()
    assert abs(clock.now() - (seconds + microseconds / 1e6)) < 0.2
