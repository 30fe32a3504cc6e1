"""Online serving of registered models over an authenticated REST API.

:mod:`.tokens` (bearer tokens, no FastAPI import) is importable everywhere;
:func:`create_app` imports FastAPI, so it is loaded lazily (``pip install
'sparkml_aiaas[serve]'``).  See ``docs/serving.md``.
"""

from sparkml_aiaas.serving.tokens import create_token, revoke_token, verify

__all__ = ["create_app", "create_token", "revoke_token", "verify"]


def create_app(*args, **kwargs):
    """See :func:`sparkml_aiaas.serving.app.create_app` (imports FastAPI)."""
    from sparkml_aiaas.serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)
