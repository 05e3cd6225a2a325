# Every target sets up its own virtualenv first; nothing needs to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/smoke
STAMP := $(VENV)/.installed

.PHONY: setup smoke sft-smoke align-smoke test bench bench-multihost clean

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,annotate]'
	touch $(STAMP)

# A real, small pretraining run on the embedded corpus. Run it twice: the second run resumes.
smoke: $(STAMP)
	$(VENV)/bin/batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.run_dir="'$(RUN_DIR)'" $(SMOKE_ARGS)

# Instruction tuning end to end: pretrain the small model (or reuse that run), SFT it on the
# default instruction set, score held-out exact match per task family, then chat with it.
SFT_BASE ?= runs/sft_smoke_base
SFT_DIR ?= runs/sft_smoke
sft-smoke: $(STAMP)
	$(VENV)/bin/batgpt train --gin_file=gin/sft_smoke_pretrain.gin --gin.TrainConfig.run_dir="'$(SFT_BASE)'"
	$(VENV)/bin/batgpt eval --task=instructions --gin_file=gin/sft_smoke.gin --checkpoint=$(SFT_BASE) --show=0
	$(VENV)/bin/batgpt train --gin_file=gin/sft_smoke.gin --gin.TrainConfig.init_from="'$(SFT_BASE)'" \
	    --gin.TrainConfig.run_dir="'$(SFT_DIR)'" $(SFT_ARGS)
	$(VENV)/bin/batgpt eval --task=instructions --gin_file=gin/sft_smoke.gin --checkpoint=$(SFT_DIR)
	printf 'What is 3 + 4?\nCopy: red fox\n/reset\nMy favourite colour is green.\nWhat is my favourite colour?\n' \
	    | $(VENV)/bin/batgpt chat --gin_file=gin/sft_smoke.gin --checkpoint=$(SFT_DIR) --max_new_tokens=24

# Alignment end to end on the tiny model: the smoke pretraining run (or reuse it), a short SFT,
# a pairwise reward model and DPO on the planted preference pairs, PPO against that reward model,
# then a table of each stage's last held-out eval (pair accuracy and margin; DPO's log-ratios,
# log-probs and KL; PPO's reward, KL, reply length and share of replies that follow the rule).
ALIGN_DIR ?= runs/align_smoke
align-smoke: $(STAMP)
	$(VENV)/bin/batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.run_dir="'$(RUN_DIR)'"
	$(VENV)/bin/batgpt train --gin_file=gin/models/tiny.gin --gin_file=gin/sft.gin \
	    --gin.TrainConfig.init_from="'$(RUN_DIR)'" --gin.TrainConfig.run_dir="'$(ALIGN_DIR)/sft'" \
	    --gin.TrainConfig.steps=300 --gin.TrainConfig.eval_every=300
	$(VENV)/bin/batgpt train --gin_file=gin/models/tiny.gin --gin_file=gin/reward.gin \
	    --gin.TrainConfig.init_from="'$(ALIGN_DIR)/sft'" --gin.TrainConfig.run_dir="'$(ALIGN_DIR)/reward'"
	$(VENV)/bin/batgpt train --gin_file=gin/models/tiny.gin --gin_file=gin/dpo.gin \
	    --gin.TrainConfig.init_from="'$(ALIGN_DIR)/sft'" --gin.TrainConfig.run_dir="'$(ALIGN_DIR)/dpo'"
	$(VENV)/bin/batgpt train --gin_file=gin/models/tiny.gin --gin_file=gin/ppo.gin \
	    --gin.TrainConfig.init_from="'$(ALIGN_DIR)/sft'" --gin.PPOConfig.reward_from="'$(ALIGN_DIR)/reward'" \
	    --gin.TrainConfig.run_dir="'$(ALIGN_DIR)/ppo'"
	$(PY) -m batgpt_jax.align.report $(ALIGN_DIR)/sft $(ALIGN_DIR)/reward $(ALIGN_DIR)/dpo $(ALIGN_DIR)/ppo

# One worker process per core (pytest-xdist), each pinned to its own core (tests/conftest.py); a
# test file stays in one worker, so its module fixtures (a trained run, a database) are built
# once. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

bench: $(STAMP)
	$(PY) benchmarks/step_bench.py $(BENCH_ARGS)

# The same run as 1 x 8, 2 x 4 and 4 x 2 processes x fake CPU devices (launch/local_multihost.sh).
bench-multihost: $(STAMP)
	$(PY) benchmarks/multihost_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
