"""DP-FedAvg on scikit-learn's digits through hardened secure aggregation (a Flower app)."""
