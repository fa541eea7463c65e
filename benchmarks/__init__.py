"""Speed and scale measurements; each prints ratios against a baseline measured in the same run."""
