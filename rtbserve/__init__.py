"""rtbserve: low-latency XGBoost inference for real-time bidding."""

__version__ = "0.1.0"
