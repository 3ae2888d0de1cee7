"""Create the database named in DATABASE_URL when it does not exist (used by `make migrate`)."""

from __future__ import annotations

import sys

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

from app.config import load_or_exit


def main() -> int:
    url = make_url(load_or_exit().database_url)
    admin = url.set(database="postgres")
    try:
        conn = psycopg2.connect(
            host=admin.host,
            port=admin.port or 5432,
            user=admin.username,
            password=admin.password,
            dbname="postgres",
        )
    except psycopg2.OperationalError as exc:
        print(
            f"createdb: cannot reach PostgreSQL at {admin.host}:{admin.port}: {exc}".strip(),
            file=sys.stderr,
        )
        return 1
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            print(f"created database {url.database}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
