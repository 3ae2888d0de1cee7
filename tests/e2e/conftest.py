from tests.rentals.conftest import host, online_node, renter  # noqa: F401  (shared fixtures)
