"""The Apache Beam graph: sources, the enrichment steps (ModelHandlers), sinks, and the batch and
streaming jobs built from them. It imports the core and the detectors (`models`), never triage or
the applications: steps are found through the registry in pipeline/steps/registry.py."""
