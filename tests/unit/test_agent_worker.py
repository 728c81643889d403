"""agent/worker.Worker, the thread AMP's and the traffic collector's controllers run on."""
import threading
import time

from ansible_collections.netstack.tuning.plugins.module_utils.agent.worker import Worker


def _loop(rounds, entered, stop_event):
    entered.set()
    while not stop_event.is_set():
        rounds.append(time.time())
        stop_event.wait(0.01)


def test_start_runs_once_and_stop_ends_the_thread():
    w = Worker("t-worker", join_timeout=5)
    rounds, entered = [], threading.Event()
    assert w.start(_loop, rounds, entered) is True
    assert entered.wait(5)
    first = w.thread
    assert w.start(_loop, rounds, entered) is False  # already running: the same thread
    assert w.thread is first and first.name == "t-worker" and first.daemon
    w.stop()
    assert w.thread is None and not w.alive() and not first.is_alive()
    assert rounds


def test_a_stopped_worker_starts_again_with_the_event_cleared():
    w = Worker("t-worker", join_timeout=5)
    for _ in range(2):
        entered = threading.Event()
        w.start(_loop, [], entered)
        assert entered.wait(5) and w.alive() and not w.stop_event.is_set()
        w.stop()
        assert not w.alive()


def test_stop_without_start_is_a_no_op():
    w = Worker("t-worker", join_timeout=1)
    w.stop()
    assert w.thread is None
