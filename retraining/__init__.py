"""Retraining: feedback into a dataset version, fine-tuning with replay (or an AutoML sweep), the gate."""
