"""How the embedding engine shares the cores out between its runner threads."""

from worker.engines.embedding_engine import MAX_DEFAULT_RUNNERS, runner_shape


def test_by_default_one_single_threaded_runner_per_core():
    assert runner_shape(0, 0, cores=1) == (1, 1)
    assert runner_shape(0, 0, cores=2) == (2, 1)


def test_by_default_big_machines_get_few_runners_with_several_threads():
    assert runner_shape(0, 0, cores=16) == (MAX_DEFAULT_RUNNERS, 16 // MAX_DEFAULT_RUNNERS)


def test_several_runners_share_the_cores_out():
    assert runner_shape(1, 0, cores=2) == (1, 2)  # one call at a time over every core
    assert runner_shape(4, 0, cores=16) == (4, 4)
    assert runner_shape(3, 0, cores=2) == (3, 1)  # never fewer than one thread a call


def test_explicit_threads_are_kept():
    assert runner_shape(3, 2, cores=2) == (3, 2)
    assert runner_shape(1, 1, cores=8) == (1, 1)
