"""Auto-match: the scheduled job moves auto-matching nodes to the market rate."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus
from app.fleet.models import HostNode
from app.marketplace.cache import OFFERS_VERSION_KEY
from app.pricing.actors import PERIODIC_JOBS, reprice_auto_match_nodes
from app.pricing.models import PriceChange
from app.rentals.models import Rental
from tests.pricing.test_suggestion import add_node, market_of_4090s


def rate_of(node_id) -> Decimal:
    with session_scope() as session:
        node = session.get(HostNode, node_id)
        assert node is not None
        return node.hourly_rate


def changes_of(node_id) -> list[PriceChange]:
    with session_scope() as session:
        return list(
            session.execute(
                select(PriceChange).where(PriceChange.node_id == node_id).order_by(PriceChange.id)
            ).scalars()
        )


def test_an_auto_matching_node_moves_to_the_market_rate_and_the_change_is_recorded(
    client, user, other_user
):
    from app.redis_client import get_redis

    market_of_4090s(other_user.id, busy=3)
    auto = add_node(user.id, gpu_count=2, rate="3.0000", auto=True)
    manual = add_node(user.id, gpu_model="RTX 3090", gpu_count=2, rate="3.0000", name="manual")
    version = int(get_redis().get(OFFERS_VERSION_KEY) or 0)

    reprice_auto_match_nodes.fn()

    assert rate_of(auto) == Decimal("0.8500")
    assert rate_of(manual) == Decimal("3.0000")
    (change,) = changes_of(auto)
    assert (change.old_rate, change.new_rate, change.basis, change.reason, change.sample_size) == (
        Decimal("3.0000"),
        Decimal("0.8500"),
        "market",
        "auto_match",
        6,
    )
    assert int(get_redis().get(OFFERS_VERSION_KEY)) > version
    offer = client.get(
        "/api/v1/offers", query_string={"q": "gpu_count=2"}, headers=user.headers
    ).json["items"]
    assert {i["node_id"]: i["hourly_rate"] for i in offer}[str(auto)] == "0.8500"


def test_repricing_twice_changes_nothing_the_second_time(user, other_user):
    market_of_4090s(other_user.id, busy=3)
    auto = add_node(user.id, gpu_count=2, rate="3.0000", auto=True)
    reprice_auto_match_nodes.fn()
    reprice_auto_match_nodes.fn()
    assert len(changes_of(auto)) == 1


def test_the_rate_never_goes_below_the_hosts_minimum(user, other_user):
    market_of_4090s(other_user.id, busy=3)
    auto = add_node(user.id, gpu_count=2, rate="3.0000", auto=True, min_rate="1.5000")
    reprice_auto_match_nodes.fn()
    assert rate_of(auto) == Decimal("1.5000")
    (change,) = changes_of(auto)
    assert (change.reason, change.suggested_rate) == ("floor", Decimal("0.8500"))


def test_auto_matching_nodes_alone_are_priced_from_the_baseline(user):
    nodes = [add_node(user.id, gpu_count=1, rate="2.0000", auto=True) for _ in range(6)]
    reprice_auto_match_nodes.fn()
    # Their own prices are no market: 0.40 (RTX 4090 baseline) with -10 % (none of 5 busy).
    assert {rate_of(n) for n in nodes} == {Decimal("0.3600")}
    reprice_auto_match_nodes.fn()
    assert {rate_of(n) for n in nodes} == {Decimal("0.3600")}  # no drift


def test_a_running_rental_keeps_its_locked_price(user, other_user):
    market_of_4090s(other_user.id, busy=3)
    auto = add_node(user.id, gpu_count=2, rate="3.0000", auto=True, status=NodeStatus.BUSY)
    with session_scope() as session:
        rental = Rental(
            renter_id=other_user.id,
            node_id=auto,
            status=RentalStatus.ACTIVE,
            image="busybox",
            cost_per_hour=Decimal("3.0000"),
            start_time=utcnow(),
        )
        session.add(rental)
        session.flush()
        rental_id = rental.id

    reprice_auto_match_nodes.fn()

    assert rate_of(auto) == Decimal("0.8500")
    with session_scope() as session:
        locked = session.get(Rental, rental_id)
        assert locked is not None
        assert (locked.cost_per_hour, locked.status) == (Decimal("3.0000"), RentalStatus.ACTIVE)


def test_the_jobs_run_at_the_configured_intervals(settings):
    intervals = {actor.actor_name: seconds(settings) for actor, seconds in PERIODIC_JOBS}
    assert intervals == {
        "reprice_auto_match_nodes": settings.pricing_interval_seconds,
        "refresh_node_reliability": settings.reliability_interval_seconds,
    }
    assert settings.pricing_interval_seconds == 900
