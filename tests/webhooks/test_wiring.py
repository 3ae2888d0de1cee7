"""The outbox sends the delivery actor by name: the name, queue and arguments must be the actor's."""

from __future__ import annotations

import inspect

from app.actors import periodic_jobs
from app.queue.broker import broker
from app.webhooks.actors import deliver_webhook, sweep_webhook_deliveries
from app.webhooks.events import DELIVER_ACTOR, QUEUE


def test_the_outbox_names_the_delivery_actor_its_queue_and_its_one_argument():
    assert broker.get_actor(DELIVER_ACTOR) is deliver_webhook
    assert deliver_webhook.queue_name == QUEUE
    assert list(inspect.signature(deliver_webhook.fn).parameters) == ["delivery_id"]


def test_the_sweeper_is_a_periodic_job_every_webhook_sweep_seconds(settings):
    jobs = {actor.actor_name: every for actor, every in periodic_jobs()}
    assert jobs[sweep_webhook_deliveries.actor_name](settings) == settings.webhook_sweep_seconds
