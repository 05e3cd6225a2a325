"""Growing a trained model into a larger one that computes the same function.

  plan.py       what a growth does (width factors, layer map, noise), validated up front
  width.py      tile and rescale one array (HyperCloning), paired symmetry-breaking noise
  depth.py      copy layers, make inserted blocks the identity; G_stack
  params.py     a whole parameter-shaped pytree, one array at a time, into target shardings
  optimizer.py  the grown train state: Adam moments carried or reset, step kept or restarted
  verify.py     the probe that proves the grown model equals the small one, layer by layer
  modes.py      the names of the depth, optimizer and schedule modes (no JAX: the parser reads them)
  parser.py     the `batgpt grow` parser (argparse only, so `--help` loads no JAX)
  command.py    `batgpt grow` at run time
"""
