"""End-to-end checks of what ships: the rendered Helm chart and the images."""
