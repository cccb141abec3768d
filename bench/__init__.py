"""Performance harness: `make bench` (`python -m bench`); see README "Performance at scale"."""
