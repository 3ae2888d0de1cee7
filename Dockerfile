FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY app app
COPY workers workers
COPY agent agent
RUN pip install --no-cache-dir -c constraints.txt .
COPY migrations migrations
COPY alembic.ini wsgi.py ./
COPY deploy deploy
USER nobody
EXPOSE 8000
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000", "wsgi:app"]
