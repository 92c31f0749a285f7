#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model with random weights.

Usage: scripts/llm/tiny_model.py OUT.gguf [--seed N]

No weights are downloaded: the tensors are drawn from a seeded normal
distribution, so the model "speaks" noise. It exists so that a real
OpenAI-compatible server (llama-cpp-python's) can be run in tests: with a
JSON-schema grammar constraining its output, the noise is still a valid
JSON answer, and the whole protocol (request, tools offered, response
format, usage, finish reason) is exercised for real.

The vocabulary is SentencePiece-style ("llama" tokenizer model): <unk>,
<s>, </s>, the chat-template markers <|im_start|> and <|im_end|> as control
tokens, and the 256 byte tokens <0x00>..<0xFF>, so any text tokenizes (byte
fallback) and any JSON can be written. Dimensions are tiny (64-wide, 2
blocks), so a prompt of a few thousand tokens is evaluated in well under a
second on one core.
"""

import argparse

import numpy as np
import gguf

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_CTX = 8192


def vocabulary():
    tokens = [b"<unk>", b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
    return tokens, types


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    tokens, types = vocabulary()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("shoal-tiny-random")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)  # <|im_end|> ends a chatml turn
    w.add_add_bos_token(False)

    def t(name, *shape, scale=0.02):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def ones(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    # numpy shapes are ggml's ne reversed: (out, in).
    t("token_embd.weight", n_vocab, N_EMBD)
    for i in range(N_LAYER):
        ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        for proj in ("q", "k", "v", "output"):
            t(f"blk.{i}.attn_{proj}.weight", N_EMBD, N_EMBD)
        ones(f"blk.{i}.ffn_norm.weight", N_EMBD)
        t(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    ones("output_norm.weight", N_EMBD)
    t("output.weight", n_vocab, N_EMBD)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
