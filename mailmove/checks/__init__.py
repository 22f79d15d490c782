"""`mailmove check`: what a domain and its mail servers look like against the gateway's rules.

The same checks serve the command line, the workflows' `preflight` and `done` stages, and the
dashboard, so a postmaster sees one verdict wherever they look.
"""
