"""The XLA flags `batgpt` adds before JAX starts: added once, never over the user's own."""

from batgpt_jax import xla_flags


def test_the_defaults_are_added_after_the_users_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert xla_flags.apply_defaults(env) == (
      "--xla_force_host_platform_device_count=8 "
      "--xla_cpu_experimental_ynn_fusion_type=dot,reduce")
  assert xla_flags.apply_defaults(env) == env["XLA_FLAGS"]  # a second call adds nothing
  assert xla_flags.apply_defaults({}) == "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"


def test_a_flag_the_user_set_is_kept_and_the_defaults_can_be_turned_off():
  env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
  assert xla_flags.apply_defaults(env) == "--xla_cpu_experimental_ynn_fusion_type=dot"
  off = {"BATGPT_XLA_DEFAULTS": "0", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  assert xla_flags.apply_defaults(off) == "--xla_cpu_enable_fast_math=false"
