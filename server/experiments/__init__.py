"""A/B experiments: arms assigned by a stable hash, a request log, feedback and reports.

- :mod:`.model` - experiment and arm definitions, their validation, assignment by hash;
- :mod:`.settings` - the ``[request_log]`` and ``[[experiments]]`` config sections;
- :mod:`.service` - :class:`~.service.ExperimentManager`, the transport-free run-time side
  (assignment for the answering core, admin verbs, feedback, reports);
- :mod:`.log_store` - the one storage interface and the choice of backend (``database_url``);
- :mod:`.store` - the SQLite file of requests, feedback and experiment definitions (default);
- :mod:`.pg_store` - the same on PostgreSQL, shared by many replicas;
- :mod:`.request_log` - the writer thread that logs served requests without slowing them;
- :mod:`.report` - an experiment's statistics from its logged requests and feedback;
- :mod:`.convert` - protobuf <-> these types, at the gRPC edge.
"""
