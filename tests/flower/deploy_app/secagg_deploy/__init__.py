"""A known-update Flower app for the deployment test of hardened secure aggregation."""
