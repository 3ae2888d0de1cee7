"""The queue inspection module against real Redis and a real worker process."""

from __future__ import annotations

import socket
import uuid

from app.redis_client import get_redis
from tests.ops import failing_actors as actors
from tests.ops.helpers import inspector, ops_worker
from tests.procs import wait_until


def _stats(queue: str):
    return next(s for s in inspector().stats() if s.name == queue)


def test_counts_match_what_was_enqueued_while_no_worker_runs():
    for number in range(3):
        actors.idle.send(number)
    for number in range(2):
        actors.idle.send_with_options(args=(number,), delay=60_000)

    stats = _stats(actors.IDLE_QUEUE)

    assert (stats.ready, stats.delayed, stats.in_flight, stats.dead) == (3, 2, 0, 0)
    names = inspector().queue_names()
    assert actors.IDLE_QUEUE in names
    assert {"system", "fleet", "rentals", "billing", "pricing"} <= set(names)


def test_the_sending_process_shows_as_a_producer_not_a_worker():
    actors.idle.send(1)

    seen = inspector().workers()

    assert seen and all(w.role == "producer" for w in seen)


def test_a_message_held_by_a_worker_counts_as_in_flight_on_that_worker():
    token = uuid.uuid4().hex
    with ops_worker(threads=1):
        actors.hold.send(token)
        wait_until(lambda: _stats(actors.OPS_QUEUE).in_flight == 1, what="the message in flight")
        stats = _stats(actors.OPS_QUEUE)
        worker = next(w for w in inspector().workers() if w.role == "worker")
        assert (stats.ready, stats.in_flight) == (0, 1)
        assert worker.alive and worker.host == socket.gethostname()
        assert worker.in_flight == 1 and actors.OPS_QUEUE in worker.queues
        get_redis().rpush(f"dc:test:release:{token}", "go")
        wait_until(lambda: _stats(actors.OPS_QUEUE).in_flight == 0, what="the message acked")


def test_a_failing_message_becomes_a_dead_letter_and_a_requeue_runs_it_again():
    token = uuid.uuid4().hex
    client = get_redis()
    with ops_worker():
        actors.fail_until_fixed.send(token)
        wait_until(lambda: _stats(actors.OPS_QUEUE).dead == 1, what="the dead letter")

        (letter,) = inspector().dead_letters(actors.OPS_QUEUE)
        assert letter.actor == "fail_until_fixed" and letter.args == [token]
        assert letter.error == f"RuntimeError: boom {token}"
        assert "fail_until_fixed" in (letter.traceback or "")
        assert inspector().dead_letter(actors.OPS_QUEUE, letter.id) == letter

        client.set(f"dc:test:fixed:{token}", "1")
        assert inspector().requeue(actors.OPS_QUEUE, letter.id) is True
        assert inspector().requeue(actors.OPS_QUEUE, letter.id) is False  # nothing twice
        wait_until(lambda: client.exists(f"dc:test:done:{token}"), what="the requeued run")

    stats = _stats(actors.OPS_QUEUE)
    assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 0)
    assert inspector().dead_letters(actors.OPS_QUEUE) == []


def test_discard_drops_one_dead_letter_and_discard_all_the_rest():
    tokens = [uuid.uuid4().hex for _ in range(3)]
    with ops_worker():
        for token in tokens:
            actors.fail_until_fixed.send(token)
        wait_until(lambda: _stats(actors.OPS_QUEUE).dead == 3, what="three dead letters")

    letters = inspector().dead_letters(actors.OPS_QUEUE)
    assert sorted(tuple(d.args) for d in letters) == sorted((t,) for t in tokens)
    assert inspector().discard(actors.OPS_QUEUE, letters[0].id) is True
    assert inspector().discard(actors.OPS_QUEUE, letters[0].id) is False
    assert inspector().discard_all(actors.OPS_QUEUE) == 2

    stats = _stats(actors.OPS_QUEUE)
    assert (stats.ready, stats.dead) == (0, 0)
    assert get_redis().hlen(f"dramatiq:{actors.OPS_QUEUE}.XQ.msgs") == 0


def test_requeue_all_puts_every_dead_letter_back_on_its_queue():
    tokens = [uuid.uuid4().hex for _ in range(2)]
    with ops_worker():
        for token in tokens:
            actors.fail_until_fixed.send(token)
        wait_until(lambda: _stats(actors.OPS_QUEUE).dead == 2, what="two dead letters")

    assert inspector().requeue_all(actors.OPS_QUEUE) == 2

    stats = _stats(actors.OPS_QUEUE)
    assert (stats.ready, stats.dead) == (2, 0)
