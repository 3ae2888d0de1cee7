"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from app.config import load_or_exit

load_or_exit()

from app import create_app  # noqa: E402

app = create_app()
