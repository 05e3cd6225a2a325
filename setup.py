"""Installs batgpt-jax: the `batgpt_jax` package and the `batgpt` command."""

import setuptools

# Ranges are the ones seen working together on CPython 3.11 (see README, "Versions").
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "seqio==0.0.20",
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "sentencepiece>=0.2.1,<0.3",
    "gin-config>=0.5.0,<0.6",
    # Prepared data (`batgpt data prepare`): ArrayRecord files read by index through grain.
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "numpy>=2.0,<3",
    "psutil>=5.9",
    "safetensors>=0.8.0,<0.9",
    "tokenizers>=0.23.3,<0.24",
    "tqdm>=4.66",
    # tensorflow-datasets imports the backport; etils 1.15's epath extra no longer brings it.
    "importlib_resources>=6,<7",
]

setuptools.setup(
    name="batgpt-jax",
    version="0.1.0",
    description="Pretrain and align BatGPT-style language models in JAX/Flax.",
    package_dir={"": "src"},
    packages=setuptools.find_packages("src"),
    package_data={"batgpt_jax": ["data/corpus/*.txt.gz", "gin/*.gin", "gin/*/*.gin",
                                 "data/instructions/*.jsonl.gz",  # the default instruction set
                                 "data/planted/*.jsonl.gz",  # the planted preference tasks
                                 # the multiple-choice sets in the C-Eval and CMMLU layouts
                                 "data/evalsets/*/*.json", "data/evalsets/*/*.jsonl",
                                 "data/evalsets/*/*/*.csv",
                                 # the annotation app's pages and its Alembic migrations
                                 "annotate/templates/*.html", "annotate/static/*",
                                 "annotate/alembic.ini", "annotate/migrations/*.py",
                                 "annotate/migrations/script.py.mako",
                                 "annotate/migrations/versions/*.py"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch is pinned exactly: 2.13.0 is the CPU build; a looser range pulls a CUDA build.
        # pytest-xdist: `make test` runs the suite in two worker processes, one per core here.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.8,<4", "torch==2.13.0",
                 "transformers>=5.24,<5.25", "lm-eval>=0.4.13,<0.5"],
        # lm-evaluation-harness tasks on our checkpoints (evaluate/lm_eval_adapter.py); it needs
        # no torch for the `batgpt` model class.
        "eval": ["lm-eval>=0.4.13,<0.5"],
        "bench": ["matplotlib>=3.9,<4"],
        # `batgpt annotate` (the labelling web app). Playwright only drives Debian's chromium in
        # the browser tests; it never downloads a browser here.
        "annotate": ["flask>=3.1.3,<3.2", "flask-wtf>=1.3,<1.4", "flask-login>=0.6.3,<0.7",
                     "sqlalchemy>=2.1.9,<2.2", "alembic>=1.20,<1.21", "argon2-cffi>=25.1,<26",
                     "psycopg[binary]>=3.3.9,<3.4", "waitress>=3.0.2,<3.1",
                     "playwright>=1.65,<1.66"],
        # Accelerator builds of the same jax: `pip install -e '.[tpu]'` on TPU VMs (launch/),
        # `'.[cuda]'` on GPU nodes. Not installed or tested here (no accelerator in CI).
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        "cuda": ["jax[cuda12]>=0.10.2,<0.11"],
    },
    entry_points={"console_scripts": ["batgpt=batgpt_jax.cli:main"]},
)
