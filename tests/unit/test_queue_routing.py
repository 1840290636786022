"""Which queue a compute job goes to, from what live workers advertise (model affinity)."""

from api.queue.routing import JobRouter
from contracts.queues import queue_for_device, queue_for_worker
from contracts.workers import LoadedModelInfo, WorkerInfo


def worker(name: str, models: tuple[str, ...] = (), active: int = 0, device: str = "cpu", lane: str = "compute"):
    return WorkerInfo(
        name=name,
        pid=1,
        seen_at=0.0,
        device=device,
        lane=lane,
        queues=[queue_for_device(device), queue_for_worker(name)],
        execution_providers=["cpu"],
        loaded_models=[LoadedModelInfo(name=m) for m in models],
        capacity=16,
        active_jobs=active,
        batch_rows=2,
    )


def route(workers: list[WorkerInfo], model: str = "m", device: str = "cpu") -> str:
    return JobRouter(lambda: workers).queue_for(model, device)


def test_with_no_worker_holding_the_model_the_job_goes_to_the_device_queue():
    assert route([worker("a"), worker("b", models=("other",))]) == queue_for_device("cpu")


def test_a_job_goes_to_the_worker_that_holds_its_model():
    assert route([worker("a"), worker("b", models=("m",))]) == queue_for_worker("b")


def test_the_least_busy_holder_is_chosen():
    assert route([worker("a", ("m",), active=2), worker("b", ("m",), active=1)]) == queue_for_worker("b")


def test_a_full_holder_gives_way_to_an_idle_peer():
    assert route([worker("a", ("m",), active=2), worker("b")]) == queue_for_worker("b")


def test_a_full_holder_keeps_the_job_when_no_peer_is_idle():
    assert route([worker("a", ("m",), active=2), worker("b", active=1)]) == queue_for_worker("a")


def test_workers_of_another_device_or_lane_are_never_chosen():
    others = [worker("gpu", ("m",), device="cuda:0"), worker("light", ("m",), lane="light")]
    assert route(others) == queue_for_device("cpu")


def test_jobs_routed_since_the_last_heartbeat_count_as_load():
    router = JobRouter(lambda: [worker("a", ("m",)), worker("b", ("m",))])
    first, second = router.queue_for("m", "cpu"), router.queue_for("m", "cpu")
    assert {first, second} == {queue_for_worker("a"), queue_for_worker("b")}


def test_routing_and_the_live_worker_check_share_one_read_of_the_workers():
    reads = []

    def live_workers() -> list[WorkerInfo]:
        reads.append(1)
        return [worker("a", ("m",)), worker("light", lane="light")]

    router = JobRouter(live_workers)
    assert {w.name for w in router.snapshot()} == {"a", "light"}  # every lane: the client checks any queue
    assert router.queue_for("m", "cpu") == queue_for_worker("a")
    router.snapshot()
    assert len(reads) == 1  # within SNAPSHOT_TTL_S: one read for all three
    router.refresh()
    assert len(reads) == 2
