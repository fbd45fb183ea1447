"""The shared core: settings, record and document contracts, label sets, clients, the Kafka writer,
retry, logging, redaction of secrets and safe parsing of outside bytes.

Every other layer builds on it and it imports none of them (only `schemas`), so anything here can be
used by a connector, a model, the Beam graph or a tool without pulling the rest of the product in.
"""
