"""Our SentencePiece vocabulary as a Hugging Face fast tokenizer (`tokenizer.json`).

transformers 5 rebuilds Llama/Qwen tokenizers as BPE, which cannot hold our unigram model, so
the export writes a generic `PreTrainedTokenizerFast` whose `tokenizer.json` replays what
SentencePiece does with our trainer settings (data/vocab.py):
  * identity normalisation, whitespace escaped to '▁' and one dummy '▁' prefixed to every text
    (a Prepend normalizer, not Metaspace: Metaspace skips the prefix when the text already
    starts with a space, SentencePiece does not);
  * the unigram pieces with their scores, unknown characters spelled as <0xNN> byte pieces;
  * the direction and chat markers (user-defined pieces) scored as SentencePiece scores them
    in its lattice, `length * max_score - 0.1`, so they always win as whole pieces, in any
    context, exactly as in SentencePiece (they are not HF "added tokens", which would split the
    text around them and change the '▁' prefix of the text that follows);
  * no BOS, and no EOS appended: ids are the bare pieces, as `SentencePieceVocabulary.encode`.
Known difference: the literal strings of the control pieces ('<pad>', '</s>', '<unk>') are
matched as special tokens by transformers and spelled out by SentencePiece.
The original `tokenizer.model` is copied beside it for tools that want SentencePiece itself.
"""

import json
import os
import shutil

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

# sentencepiece ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6
SPACE = "\u2581"


def _load_proto(model_path: str) -> sp_pb2.ModelProto:
  proto = sp_pb2.ModelProto()
  with open(model_path, "rb") as f:
    proto.ParseFromString(f.read())
  return proto


def _check_supported(proto: sp_pb2.ModelProto, model_path: str) -> None:
  norm, trainer = proto.normalizer_spec, proto.trainer_spec
  problems = []
  if trainer.model_type != sp_pb2.TrainerSpec.UNIGRAM:
    problems.append(f"model_type {sp_pb2.TrainerSpec.ModelType.Name(trainer.model_type)} (need "
                    "UNIGRAM)")
  if norm.name != "identity" or norm.precompiled_charsmap:
    problems.append(f"normalizer {norm.name!r} (need 'identity')")
  if norm.remove_extra_whitespaces:
    problems.append("remove_extra_whitespaces=True (need False)")
  if not norm.escape_whitespaces:
    problems.append("escape_whitespaces=False (need True)")
  if trainer.treat_whitespace_as_suffix:
    problems.append("treat_whitespace_as_suffix=True (need False)")
  if problems:
    raise ValueError(f"The SentencePiece model {model_path} cannot be exported as an identical "
                     f"Hugging Face tokenizer: {'; '.join(problems)}. Train it with `batgpt "
                     "tokenizer train`, which uses the supported settings.")


def tokenizer_json(model_path: str) -> str:
  """The `tokenizer.json` text of a SentencePiece unigram model trained by data/vocab.py."""
  # pylint: disable=import-outside-toplevel
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
  proto = _load_proto(model_path)
  _check_supported(proto, model_path)
  normal = [p.score for p in proto.pieces if p.type == _NORMAL]
  max_score, min_score = max(normal, default=0.0), min(normal, default=0.0)
  vocab, unk_id = [], None
  for i, piece in enumerate(proto.pieces):
    if piece.type == _USER_DEFINED:
      score = len(piece.piece) * max_score - 0.1  # SentencePiece's lattice score for these
    elif piece.type in (_CONTROL, _BYTE, _UNKNOWN):
      score = min_score  # never better than the normal pieces; the minimum stays the same
    else:
      score = piece.score
    if piece.type == _UNKNOWN:
      unk_id = i
    vocab.append((piece.piece, score))
  tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id,
                                 byte_fallback=proto.trainer_spec.byte_fallback))
  steps = [normalizers.Replace(" ", SPACE)]
  if proto.normalizer_spec.add_dummy_prefix:
    steps.insert(0, normalizers.Prepend(SPACE))
  tok.normalizer = normalizers.Sequence(steps)
  decode = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
  if proto.normalizer_spec.add_dummy_prefix:
    decode.append(decoders.Strip(content=" ", left=1, right=0))
  tok.decoder = decoders.Sequence(decode)
  specials = [(p.piece, i) for i, p in enumerate(proto.pieces) if p.type in (_CONTROL, _UNKNOWN)]
  tok.add_special_tokens([AddedToken(piece, normalized=False, special=True)
                          for piece, _ in specials])
  return tok.to_str(pretty=True)


def _special(proto: sp_pb2.ModelProto, piece_id: int) -> str | None:
  return proto.pieces[piece_id].piece if 0 <= piece_id < len(proto.pieces) else None


def write_hf_tokenizer(model_path: str, out_dir: str, *, model_max_length: int) -> list[str]:
  """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json, tokenizer.model."""
  proto = _load_proto(model_path)
  spec = proto.trainer_spec
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
    f.write(tokenizer_json(model_path))
  special = {name: _special(proto, piece_id) for name, piece_id in
             (("pad_token", spec.pad_id), ("eos_token", spec.eos_id), ("unk_token", spec.unk_id),
              ("bos_token", spec.bos_id))}
  special = {k: v for k, v in special.items() if v is not None}
  markers = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "padding_side": "left", **special,
            "batgpt_markers": markers}  # informational: the direction and chat pieces
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
    json.dump(special, f, indent=2, ensure_ascii=False)
  shutil.copyfile(model_path, os.path.join(out_dir, "tokenizer.model"))
  return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"]
