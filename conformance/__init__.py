"""The conformance suite QA runs against a virtual or a real card, and its reports."""
