"""Tests that start the replica as a process on this machine from built artifacts (build/models, made by
`make setup`), with no engine: apart from tests/unit, which needs neither a process nor an artifact."""
