"""Evaluation: scoring model outputs (replies are given; generation lives in sample/)."""
