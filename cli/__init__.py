"""The top layer: the `triage` command line, its printed reports, and the developer tools (demo,
benchmarks). Nothing imports from here."""
