"""The agents' and analysts' applications over the indices: the desk (queue, claim, answer, relabel),
queries and service-level figures, alerts on spikes, and reprocessing with new models."""
