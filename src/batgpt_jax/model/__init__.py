"""The BatGPT decoder: config, layers and the scanned transformer stack."""

from flax import nnx

# Parameters carry logical axis names; parallel.py turns them into shardings. Flax must not try
# to shard variables itself at creation (it would need a mesh wherever a layer is built).
nnx.use_eager_sharding(False)
