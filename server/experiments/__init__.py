"""A/B experiments: arms assigned by a stable hash, a request log, feedback and reports.

- :mod:`.model` - experiment and arm definitions, their validation, assignment by hash;
- :mod:`.settings` - the ``[request_log]`` and ``[[experiments]]`` config sections;
- :mod:`.service` - :class:`~.service.ExperimentManager`, the transport-free run-time side
  (assignment for the answering core, admin verbs, feedback, reports);
- :mod:`.store` - the SQLite file of requests, feedback and experiment definitions;
- :mod:`.request_log` - the writer thread that logs served requests without slowing them;
- :mod:`.report` - an experiment's statistics from its logged requests and feedback;
- :mod:`.convert` - protobuf <-> these types, at the gRPC edge.
"""
