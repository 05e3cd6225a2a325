"""The generation engine and the commands on it: `generate`, `chat`.

  engine.py   the whole decode loop on device (prefill, then `jax.lax.while_loop`), sharded
  filters.py  greedy / temperature / top-k / top-p: the choice of the next token
  text.py     text <-> prompt ids in both directions, and decoded continuations with their spaces
  generate.py `batgpt generate`;  chat.py `batgpt chat`
"""
