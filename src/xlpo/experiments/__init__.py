"""Multi-stage runs that chain data building, training and evaluation, skipping finished stages."""
