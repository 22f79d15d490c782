"""`python worker.py [--config FILE] [--host FQDN]`: the worker process (mailmove/worker.py), as
`mailmove worker` runs it."""

from mailmove.worker import main

if __name__ == "__main__":
    main()
