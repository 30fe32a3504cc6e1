"""The served app built from plain options: one process (``serve``) or each of ``--workers N``.

uvicorn starts N worker processes from an import string, so the options travel to them in
the environment (:data:`OPTIONS_ENV`, JSON) and :func:`app_from_environment` builds the same
app in each: REST and, with ``grpc_port``, gRPC on the same event loop.

State is per process.  With N workers each holds its own model cache (N copies in memory),
re-reads aliases and the tokens file on its own, and keeps its own per-token rate limits and
per-address failed-authentication throttle: the kernel spreads connections over the workers
(uvicorn's shared socket for REST, ``SO_REUSEPORT`` for gRPC), so a client may get up to N
times the configured rate before it is refused.  docs/serving.md says so.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

#: Where ``serve --workers N`` puts the options for its worker processes.
OPTIONS_ENV = "SPARKML_AIAAS_SERVE_OPTIONS"


def build_app(options: Dict[str, Any]):
    """The FastAPI app ``serve`` runs, from ``options`` (the serve flags, as a dict)."""
    from sparkml_aiaas.serving.app import create_app
    from sparkml_aiaas.serving.tls import TLSConfig

    app = create_app(options["registry"], options["models"], options["tokens_file"],
                     max_body_bytes=options["max_body_bytes"],
                     max_records=options["max_records"],
                     alias_check_seconds=options["alias_check_seconds"],
                     rate_limit=options["rate_limit"],
                     trusted_factories=options["trusted_factories"],
                     failed_auth_limit=options.get("failed_auth_limit") or None,
                     failed_auth_burst=options.get("failed_auth_burst", 20.0))
    if options.get("grpc_port") is not None:
        from sparkml_aiaas.serving.grpc_server import GrpcOptions, attach_grpc

        tls = TLSConfig.from_flags(options.get("tls_cert"), options.get("tls_key"),
                                   options.get("tls_client_ca"))
        # Started and stopped by the app's lifespan, on uvicorn's event loop, with the
        # app's models, tokens and rate limits.
        attach_grpc(app, GrpcOptions(host=options["host"], port=options["grpc_port"], tls=tls,
                                     max_message_bytes=options["max_body_bytes"],
                                     max_records=options["max_records"],
                                     reuse_port=options.get("workers", 1) > 1))
    return app


def app_from_environment():
    """uvicorn's factory in each worker process: :func:`build_app` of :data:`OPTIONS_ENV`."""
    return build_app(json.loads(os.environ[OPTIONS_ENV]))
