"""Enrichment steps. Each is a Beam ModelHandler: load its model once per worker, enrich a batch."""
