"""Offline metrics: they ship with the package, nothing is fetched.

`scores` holds the one definition of accuracy and macro-F1 (every stage's metrics.json, report and
manifest); `throughput` measures inference speed.
"""
