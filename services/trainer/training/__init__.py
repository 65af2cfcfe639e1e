"""Training stages (policy SFT, PPM) as jobs: a spec on the store volume, ranks launched by torchrun in this
process's machine or in a Kubernetes Job, a result that says the stage finished (see spec.py)."""
