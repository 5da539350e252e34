"""Robustness of trained networks. `attacks`: L-infinity adversarial attacks and the robust
accuracy they leave (`nas attack`); the same attacks make the batches of adversarial
training (`nas retrain --adv-train`)."""
