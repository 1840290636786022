"""How the embedding engine shares the cores out between its runner threads."""

from worker.engines.embedding_engine import MAX_RUNNERS, runner_shape


def test_automatic_shape_is_one_runner_per_core_with_one_thread_each():
    assert runner_shape(0, 0, cores=2) == (2, 1)


def test_runners_are_capped_on_large_hosts_and_share_the_cores():
    assert runner_shape(0, 0, cores=16) == (MAX_RUNNERS, 16 // MAX_RUNNERS)


def test_one_core_gives_one_runner():
    assert runner_shape(0, 0, cores=1) == (1, 1)


def test_explicit_settings_are_kept():
    assert runner_shape(3, 2, cores=2) == (3, 2)
    assert runner_shape(1, 0, cores=8) == (1, 8)
