"""Alembic environment for Den.

Den runs migrations itself (:meth:`runhouse.den.db.Database.upgrade`) on a connection it passes in
``config.attributes["connection"]``. For developers, ``alembic -x url=sqlite:///den.sqlite ...``
with ``script_location`` pointing here works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from runhouse.den.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(str(url))
    with engine.begin() as own_connection:
        context.configure(connection=own_connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
