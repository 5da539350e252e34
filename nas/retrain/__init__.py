"""Retraining a discovered (or published) genotype from scratch: the DARTS evaluation recipe."""
