"""`python -m cli ...` is `triage ...` (worker processes are started this way)."""
import sys

from cli.main import main

sys.exit(main())
