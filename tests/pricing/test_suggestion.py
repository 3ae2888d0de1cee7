"""Smart pricing: the suggestion from the market, from the baseline, and its endpoint."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.enums import NodeStatus
from app.pricing.baseline import gpu_baseline, normalize_model
from app.pricing.service import demand_multiplier, percentile, trim_outliers
from tests.marketplace.market import add_node as _add_node


def add_node(*args, **kwargs):
    """A market node; verified unless the test says otherwise (only verified nodes count)."""
    kwargs.setdefault("verified", True)
    return _add_node(*args, **kwargs)


PEER_RATES = ["0.3000", "0.3500", "0.4000", "0.4500", "0.5000", "0.6000"]


def suggestion(client, owner, node_id):
    response = client.get(f"/api/v1/nodes/{node_id}/pricing-suggestion", headers=owner.headers)
    assert response.status_code == 200, response.json
    return response.json


def market_of_4090s(owner_id, busy: int = 0):
    """Six single-4090 nodes; the first `busy` of them rented."""
    for index, rate in enumerate(PEER_RATES):
        add_node(
            owner_id,
            gpu_model="RTX 4090",
            gpu_count=1,
            rate=rate,
            status=NodeStatus.BUSY if index < busy else NodeStatus.ONLINE,
        )


def test_the_suggestion_is_the_market_median_per_gpu_scaled_to_the_gpu_count(
    client, user, other_user
):
    market_of_4090s(other_user.id, busy=3)  # half busy: no demand adjustment
    mine = add_node(user.id, gpu_model="rtx 4090", gpu_count=2, rate="9.0000")
    body = suggestion(client, user, mine)
    assert body["basis"] == "market"
    assert body["market"] == {
        "sample_size": 6,
        "p25": "0.7250",
        "median": "0.8500",
        "p75": "0.9750",
    }
    assert body["demand"] == {
        "similar_nodes": 6,
        "busy_nodes": 3,
        "gpus": 6,
        "gpus_in_use": 3,
        "busy_fraction": 0.5,
        "multiplier": "1.0000",
    }
    assert body["suggested_hourly_rate"] == "0.8500"
    assert body["baseline"] is None


@pytest.mark.parametrize(
    ("busy", "suggested", "multiplier"),
    [
        (0, "0.7650", "0.9000"),  # nobody renting: -10 %
        (6, "1.0200", "1.2000"),  # all rented: +20 %
        (5, "0.9633", "1.1333"),  # 5/6 busy: +13.33 %
    ],
)
def test_demand_moves_the_market_price(client, user, other_user, busy, suggested, multiplier):
    market_of_4090s(other_user.id, busy=busy)
    mine = add_node(user.id, gpu_count=2)
    body = suggestion(client, user, mine)
    assert (body["suggested_hourly_rate"], body["demand"]["multiplier"]) == (suggested, multiplier)


def test_offline_nodes_other_models_and_auto_matching_prices_are_not_the_market(
    client, user, other_user
):
    market_of_4090s(other_user.id, busy=3)
    add_node(other_user.id, rate="0.0100", status=NodeStatus.OFFLINE)
    add_node(other_user.id, rate="0.0100", status=NodeStatus.MAINTENANCE)
    add_node(other_user.id, gpu_model="RTX 3090", rate="0.0100")
    add_node(other_user.id, rate="0.0100", auto=True)  # counts for demand, not for price
    mine = add_node(user.id, gpu_count=2)
    body = suggestion(client, user, mine)
    assert body["market"]["median"] == "0.8500"
    assert body["market"]["sample_size"] == 6
    assert body["demand"]["similar_nodes"] == 7


def test_with_too_few_comparable_nodes_the_baseline_is_used(client, user, other_user):
    for rate in PEER_RATES[:4]:
        add_node(other_user.id, gpu_model="RTX 4090", rate=rate)
    mine = add_node(user.id, gpu_model="NVIDIA GeForce RTX 4090", gpu_count=2)
    body = suggestion(client, user, mine)
    assert body["basis"] == "baseline"
    assert body["baseline"] == {"reference": "RTX 4090", "unit_price": "0.4000"}
    assert body["suggested_hourly_rate"] == "0.8000"
    assert body["market"]["sample_size"] == 0  # other spelling of the model: not comparable


def test_the_few_market_prices_are_still_shown_beside_the_baseline(client, user, other_user):
    for rate in PEER_RATES[:3]:
        add_node(other_user.id, gpu_model="A100 80GB", gpu_count=1, vram=80, rate=rate)
    mine = add_node(user.id, gpu_model="A100 80GB", gpu_count=4, vram=80)
    body = suggestion(client, user, mine)
    assert body["basis"] == "baseline"
    assert body["suggested_hourly_rate"] == "5.2000"  # 4 x 1.30
    assert body["market"] == {
        "sample_size": 3,
        "p25": "1.3000",
        "median": "1.4000",
        "p75": "1.5000",
    }


def test_a_cpu_only_node_is_priced_per_core_and_gb_of_ram(client, user):
    mine = add_node(user.id, gpu_model="none", gpu_count=0, vram=0, cpu=16, ram=64)
    body = suggestion(client, user, mine)
    assert body["basis"] == "baseline"
    assert body["suggested_hourly_rate"] == "0.4800"  # 16 x 0.02 + 64 x 0.0025
    assert body["baseline"]["reference"] == "CPU"


def test_an_unknown_gpu_is_priced_by_its_memory(client, user):
    mine = add_node(user.id, gpu_model="Imaginary X9", gpu_count=1, vram=40)
    body = suggestion(client, user, mine)
    assert body["suggested_hourly_rate"] == "0.6000"
    assert body["baseline"]["reference"] == "unknown GPU, by VRAM"


def test_the_suggestion_is_only_for_the_owner(client, user, other_user, admin):
    mine = add_node(user.id)
    for someone in (other_user, admin):
        response = client.get(f"/api/v1/nodes/{mine}/pricing-suggestion", headers=someone.headers)
        assert response.status_code == 404
    assert client.get(f"/api/v1/nodes/{mine}/pricing-suggestion").status_code == 401


@pytest.mark.parametrize(
    ("model", "reference"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("A100 80", "A100 80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("Tesla T4", "T4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("GeForce RTX 4070 Ti SUPER", "RTX 4070 Ti"),
        ("NVIDIA A10G", "A10"),
    ],
)
def test_baseline_recognises_the_names_drivers_report(model, reference):
    assert gpu_baseline(model, Decimal(24)).reference == reference


def test_model_names_are_normalized():
    assert normalize_model("NVIDIA GeForce RTX-4090 ") == "rtx 4090"


def test_percentiles_interpolate_like_percentile_cont():
    values = [Decimal(v) for v in ("1", "2", "3", "4")]
    assert percentile(values, Decimal("0.5")) == Decimal("2.5")
    assert percentile(values, Decimal("0.25")) == Decimal("1.75")
    assert percentile([Decimal(7)], Decimal("0.75")) == 7


def test_demand_is_neutral_with_too_few_nodes_to_judge():
    assert demand_multiplier(0, 0) == (None, Decimal(1))
    assert demand_multiplier(4, 4) == (Decimal(1), Decimal(1))
    assert demand_multiplier(5, 5)[1] == Decimal("1.2000")
    assert demand_multiplier(10, 0)[1] == Decimal("0.9000")


def test_five_unverified_nodes_at_a_hundredth_of_a_cent_do_not_move_the_price(
    client, user, other_user, make_user
):
    market_of_4090s(other_user.id, busy=3)
    mine = add_node(user.id, gpu_model="rtx 4090", gpu_count=2, rate="9.0000")
    before = suggestion(client, user, mine)
    faker = make_user("user_faker")
    for _ in range(5):
        add_node(faker.id, gpu_model="RTX 4090", rate="0.0001", verified=False)
    after = suggestion(client, user, mine)
    assert after == before
    assert after["suggested_hourly_rate"] == "0.8500"
    assert after["market"]["sample_size"] == 6


def test_verified_outliers_are_trimmed_from_the_market_sample(client, user, other_user):
    market_of_4090s(other_user.id, busy=3)
    add_node(other_user.id, gpu_model="RTX 4090", rate="0.0001")  # verified, absurdly cheap
    add_node(other_user.id, gpu_model="RTX 4090", rate="50.0000")  # verified, absurdly dear
    mine = add_node(user.id, gpu_model="rtx 4090", gpu_count=2, rate="9.0000")
    body = suggestion(client, user, mine)
    # Both left out: the sample and its percentiles are those of the six honest prices.
    assert body["market"] == {
        "sample_size": 6,
        "p25": "0.7250",
        "median": "0.8500",
        "p75": "0.9750",
    }


def test_trimming_keeps_an_ordinary_spread_and_drops_what_is_far_from_the_median():
    honest = [Decimal(v) for v in PEER_RATES]
    assert trim_outliers(honest) == honest
    assert trim_outliers(sorted([*honest, Decimal("0.0001"), Decimal("9")])) == honest


def test_the_suggestion_never_goes_below_the_platform_floor(client, user, other_user):
    for _ in range(6):
        add_node(other_user.id, gpu_model="Cheap GPU", rate="0.0010")
    mine = add_node(user.id, gpu_model="Cheap GPU", gpu_count=1)
    body = suggestion(client, user, mine)
    assert body["basis"] == "market"
    assert body["market"]["median"] == "0.0010"
    assert body["suggested_hourly_rate"] == "0.0100"  # PRICING_FLOOR_HOURLY_RATE's default
