"""`triage web`: the workspace for agents, supervisors and analysts over the product's Elasticsearch indices.

A Flask application (`app.create_app`) served by waitress, fully offline: templates, CSS, JavaScript and the
server-rendered SVG charts are all inside this package. What each role may see is decided on the server
(`access.py`), never by hiding things in the page.
"""
