"""Triage: the rules that route a post to a queue, give it a priority and a deadline, and say when
a conversation must move to a private channel; and the enrichment step that applies them.

It sits above the Beam graph: the step is found through the step registry (an entry point), so
`pipeline/` never imports it.
"""
