"""The A/B preference annotation app: labellers judge pairs of answers; the export feeds the
reward model.

Flask + SQLAlchemy + Alembic; nothing here imports JAX or TensorFlow (`batgpt annotate` is light).
"""
