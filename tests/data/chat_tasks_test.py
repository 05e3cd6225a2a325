"""Instruction data as seqio tasks and through the pipeline: features, splits, truncation to
seq_len, errors; the batches' loss_weights are exactly the reply tokens."""

import itertools
import json
import logging

import gin
import numpy as np
import pytest
import seqio

from batgpt_jax.data import chat, chat_records, pipeline, tasks, vocab

SEQ_LEN = 128


def _conversation(i: int) -> dict:
  turns = [{"role": "user", "content": f"Copy number {i}: cat dog"},
           {"role": "assistant", "content": f"cat dog {i}"}]
  if i % 3 == 0:
    turns += [{"role": "user", "content": "And again?"},
              {"role": "assistant", "content": f"cat dog {i} again"}]
  system = [{"role": "system", "content": "Be brief."}] if i % 2 else []
  return {"messages": system + turns, "family": "copy"}


def _write_jsonl(path, records):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                          for r in records), encoding="utf-8")
  return path


def _examples(name, split="train", shard=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False, shard_info=shard, num_epochs=1,
      trim_output_features=False)
  return list(ds.as_numpy_iterator())


def _expected(vocabulary, record, **kwargs):
  conversation = chat_records.conversation_from_record(record, "auto", "test")
  return chat.training_example(vocabulary, conversation, seq_len=SEQ_LEN, eos_id=vocab.EOS_ID,
                               **kwargs)


def test_chat_jsonl_task_outputs_targets_and_loss_mask(tmp_path, data_tiny_vocab):
  records = [_conversation(i) for i in range(120)]
  path = _write_jsonl(tmp_path / "chat.jsonl", records[:60])
  _write_jsonl(tmp_path / "more.jsonl", records[60:])
  source = tasks.ChatJsonl(str(tmp_path / "*.jsonl"))
  name = tasks.register_task(source, data_tiny_vocab, seq_len=SEQ_LEN)
  assert tasks.register_task(source, data_tiny_vocab, seq_len=SEQ_LEN) == name
  assert tasks.register_task(source, data_tiny_vocab, seq_len=64) != name  # fitted to seq_len
  features = seqio.get_mixture_or_task(name).output_features
  assert sorted(features) == ["loss_mask", "targets"]
  train, validation = _examples(name), _examples(name, "validation")
  assert (len(train), len(validation)) == (116, 4)  # record i % 50 == 0 of each file held out
  expected_train = [r for i, r in enumerate(records) if i % 60 % 50]
  for example, record in zip(train, expected_train):
    expected = _expected(data_tiny_vocab, record)
    assert example["targets"].dtype == example["loss_mask"].dtype == np.int32
    np.testing.assert_array_equal(example["targets"], expected["targets"])
    np.testing.assert_array_equal(example["loss_mask"], expected["loss_mask"])
    assert example["targets"][-1] == vocab.EOS_ID
  shares = [_examples(name, shard=seqio.ShardInfo(i, 2)) for i in range(2)]
  assert [len(s) for s in shares] == [58, 58]  # one file per shard
  last_only = tasks.register_task(tasks.ChatJsonl(str(path), last_turn_only=True),
                                  data_tiny_vocab, seq_len=SEQ_LEN)
  first = _examples(last_only)[2]  # record 3: two turns, only the last is a target
  np.testing.assert_array_equal(
      first["loss_mask"], _expected(data_tiny_vocab, records[3], last_turn_only=True)["loss_mask"])
  assert first["loss_mask"].sum() < _expected(data_tiny_vocab, records[3])["loss_mask"].sum()


def test_over_long_conversations_are_truncated_or_skipped(tmp_path, data_tiny_vocab, caplog):
  long_turns = [{"role": r, "content": f"{r} turn {i} " + "cat dog bird " * 2}
                for i in range(8) for r in ("user", "assistant")]
  records = [{"messages": long_turns}, {"messages": long_turns},
             {"prompt": "x " * 200, "response": "too long to fit"}, _conversation(1)]
  path = _write_jsonl(tmp_path / "long.jsonl", records)
  before = tasks.overlong_conversation_count()
  name = tasks.register_task(tasks.ChatJsonl(str(path)), data_tiny_vocab, seq_len=SEQ_LEN)
  with caplog.at_level(logging.WARNING):
    train = _examples(name)
  assert len(train) == 2 and tasks.overlong_conversation_count() == before + 1
  assert f"{path}:3" in caplog.text and "seq_len=128" in caplog.text
  truncated = data_tiny_vocab.decode(train[0]["targets"].tolist())
  assert len(train[0]["targets"]) + 1 <= SEQ_LEN and "turn 7" in truncated
  assert "turn 0" not in truncated and truncated.startswith("[Turn 1]")


def test_malformed_chat_jsonl_is_a_clear_error(tmp_path, data_tiny_vocab):
  path = _write_jsonl(tmp_path / "bad.jsonl", [_conversation(0), _conversation(1),
                                               {"messages": [{"role": "user", "content": "a"}]}])
  with pytest.raises(ValueError, match=rf"{path}:3: the roles are \['user'\]"):
    tasks.register_task(tasks.ChatJsonl(str(path)), data_tiny_vocab, seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match=r"no file matches .*ChatJsonl.file_pattern"):
    tasks.register_task(tasks.ChatJsonl(str(tmp_path / "none*.jsonl")), data_tiny_vocab,
                        seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match=r"register it with seq_len >= 2 \(found None"):
    tasks.register_task(tasks.ChatJsonl(str(path)), data_tiny_vocab)
  with pytest.raises(ValueError, match="ChatJsonl.format='sharegpt'; expected one of"):
    tasks.ChatJsonl(str(path), format="sharegpt")
  before = tasks.invalid_json_count()
  ok = _write_jsonl(tmp_path / "ok.jsonl", [_conversation(0), '{"messages": [', _conversation(1),
                                            _conversation(2)])
  name = tasks.register_task(tasks.ChatJsonl(str(ok)), data_tiny_vocab, seq_len=SEQ_LEN)
  assert len(_examples(name)) == 2 and tasks.invalid_json_count() == before + 1


def test_default_instructions_task(data_tiny_vocab):
  name = tasks.register_task(tasks.DefaultInstructions(), data_tiny_vocab, seq_len=256)
  held_out = _examples(name, "validation")
  assert len(held_out) == 480  # none is too long for 256 tokens
  assert all(e["loss_mask"].sum() > 0 and e["targets"][-1] == vocab.EOS_ID for e in held_out)
  rendered = list(tasks.raw_documents(tasks.DefaultInstructions(), "validation"))
  assert len(rendered) == 480 and rendered[0].startswith("[Turn 1]\n\n[User] What is")


def test_instruction_data_config_is_l2r_only_and_not_mixed(tmp_path, data_tiny_vocab):
  with pytest.raises(ValueError, match="instruction data is L2R only. Set "
                                       "DataConfig.direction_mode = 'l2r'"):
    pipeline.DataConfig(sources=((tasks.DefaultInstructions(), 1.0),))
  path = _write_jsonl(tmp_path / "c.jsonl", [_conversation(i) for i in range(4)])
  with pytest.raises(ValueError, match="mixes instruction sources"):
    tasks.register_mixture([(tasks.ChatJsonl(str(path)), 1.0), (tasks.DefaultCorpus(), 1.0)],
                           data_tiny_vocab, seq_len=SEQ_LEN)
  two = tasks.register_mixture([(tasks.ChatJsonl(str(path)), 1.0),
                                (tasks.DefaultInstructions(), 1.0)], data_tiny_vocab,
                               seq_len=SEQ_LEN)
  assert two.startswith("batgpt_mixture_")


def test_sft_batches_weight_exactly_the_reply_tokens(tmp_path, data_tiny_vocab):
  records = [_conversation(i) for i in range(60)]
  path = _write_jsonl(tmp_path / "c.jsonl", records)
  cfg = pipeline.DataConfig(sources=((tasks.ChatJsonl(str(path)), 1.0),), direction_mode="l2r",
                            shuffle_buffer=16)
  batches = list(itertools.islice(pipeline.train_batches(
      cfg, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=4, process_index=0, process_count=1),
      6))
  assert set(batches[0]) == {"tokens", "targets", "segment_ids", "positions", "directions",
                             "loss_weights"}
  l2r_id, _ = vocab.direction_ids(data_tiny_vocab)
  masks = {}
  for record in records:
    example = _expected(data_tiny_vocab, record)
    masks[tuple([l2r_id] + example["targets"].tolist())] = [0] + example["loss_mask"].tolist()
  segments = 0
  for batch in batches:
    assert not batch["directions"].any()
    for row in range(4):
      tokens, segs = batch["tokens"][row], batch["segment_ids"][row]
      for s in range(1, segs.max() + 1):
        where = np.flatnonzero(segs == s)
        mask = masks[tuple(tokens[where].tolist())]  # a whole conversation: never split
        np.testing.assert_array_equal(batch["positions"][row][where], np.arange(len(where)))
        np.testing.assert_array_equal(batch["loss_weights"][row][where],
                                      mask[1:] + [0])  # i is trained iff i+1 is a reply token
        segments += 1
      assert (batch["loss_weights"][row][segs == 0] == 0).all()
  assert segments > 6 * 4  # packed: several conversations a row


def test_sft_from_gin(tmp_path, data_tiny_vocab_path):
  path = _write_jsonl(tmp_path / "c.jsonl", [_conversation(i) for i in range(8)])
  gin.parse_config(["DataConfig.sources = [(@ChatJsonl(), 1.0)]",
                    f"ChatJsonl.file_pattern = '{path}'",
                    "ChatJsonl.format = 'messages'",
                    "ChatJsonl.last_turn_only = True",
                    "DataConfig.direction_mode = 'l2r'",
                    f"DataConfig.vocab_path = '{data_tiny_vocab_path}'"])
  cfg = pipeline.DataConfig()
  assert cfg.sources == ((tasks.ChatJsonl(str(path), "messages", True), 1.0),)
  batch = next(pipeline.train_batches(cfg, pipeline.vocabulary_for(cfg), seq_len=SEQ_LEN,
                                      global_batch=2, process_index=0, process_count=1))
  assert batch["loss_weights"].sum() > 0
  gin.clear_config()
  gin.parse_config(["DataConfig.sources = [(@DefaultInstructions(), 1.0)]",
                    "DataConfig.direction_mode = 'l2r'"])
  assert pipeline.DataConfig().sources == ((tasks.DefaultInstructions(), 1.0),)
