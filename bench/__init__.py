"""The wallet-server benchmark; run with ``python -m bench.run`` (``make bench``)."""
