"""Optional integrations, each behind its own extra so the core stays small.

* ``icr_async.contrib.redis``: ``RedisTokenCache``, a token cache shared by every worker of a
  fleet (``pip install 'icr-async[redis]'``).
"""
