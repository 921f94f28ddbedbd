"""A behavioural model of MCUboot: swap-type table, strategies, resumable swaps."""
