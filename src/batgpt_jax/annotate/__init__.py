"""The A/B preference annotation app: labellers judge pairs of answers, the export feeds reward models.

Flask + SQLAlchemy + Alembic; nothing here imports JAX or TensorFlow (`batgpt annotate` stays light).
"""
