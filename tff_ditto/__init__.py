"""tff-ditto: Ditto personalized federated learning and robust aggregation in TFF."""
