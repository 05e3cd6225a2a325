"""The generation engine and the commands on it: `generate`, `chat`.

  engine.py   the whole decode loop on device (prefill, then `jax.lax.while_loop`), sharded
  filters.py  greedy / temperature / top-k / top-p: the choice of the next token
  text.py     text <-> prompt ids in both directions, and decoded continuations with their spaces
  options.py  a checkpoint loaded onto the mesh (`load`), and the flags the commands share
  generate.py `batgpt generate`;  chat.py `batgpt chat`
"""
