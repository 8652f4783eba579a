"""Example specs and datasets (bundled sklearn data and a synthetic generator; no network)."""
