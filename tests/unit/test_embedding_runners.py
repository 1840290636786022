"""How the embedding engine shares the cores out between its runner threads."""

from worker.engines.embedding_engine import runner_shape


def test_by_default_one_runner_calls_onnxruntime_over_every_core():
    assert runner_shape(0, 0, cores=2) == (1, 2)
    assert runner_shape(0, 0, cores=16) == (1, 16)


def test_several_runners_share_the_cores_out():
    assert runner_shape(2, 0, cores=2) == (2, 1)
    assert runner_shape(4, 0, cores=16) == (4, 4)
    assert runner_shape(3, 0, cores=2) == (3, 1)  # never fewer than one thread a call


def test_explicit_threads_are_kept():
    assert runner_shape(3, 2, cores=2) == (3, 2)
    assert runner_shape(1, 1, cores=8) == (1, 1)
