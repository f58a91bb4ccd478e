"""Den: runhouse's self-hosted registry service (``runhouse den start``).

Users and tokens, resources by ``/owner/name`` with their config history, sharing and visibility,
an encrypted secrets vault, usage events and cluster heartbeats, over the HTTP API in
``docs/den-api.md``. It stores into SQLite (the default, a file in the data dir) or PostgreSQL.

Modules: ``app`` (the FastAPI app factory), ``routes/`` (one router per area), ``registry``
(resources, access, shares), ``auth`` (tokens and scopes), ``limits`` (what a request may carry),
``vault`` (encryption), ``usage``, ``db`` (engine, transactions, migrations), ``models`` (tables),
``migrations/`` (Alembic), ``service`` (running and stopping the process) and ``admin`` (what the
CLI does on the database).

Serving Den needs its server libraries (FastAPI, SQLAlchemy, Alembic, psycopg), the ``den`` extra:
``pip install "runhouse[den]"``. The modules every ``runhouse`` command loads (``service``,
``limits``, ``names``, ``errors``) import none of them, and ``service.require_server_stack``
names the extra when one is missing.
"""
