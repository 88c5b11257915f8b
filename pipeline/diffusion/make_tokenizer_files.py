"""Build the CLIP tokenizer files (vocab.json, merges.txt) shipped in ``sd15_config/tokenizer``.

SD 1.5 uses OpenAI CLIP ViT-L/14's byte-level BPE tokenizer. Its vocabulary is published as
``bpe_simple_vocab_16e6.txt.gz`` (MIT licence, OpenAI), which the PyPI package ``open-clip-torch`` ships
inside its wheel. This script reads that file straight out of the wheel (nothing is imported or
installed) and writes the Hugging Face form of the same vocabulary, exactly as OpenAI's
``SimpleTokenizer`` builds it: 256 byte symbols, the same 256 with ``</w>``, the 48,894 merges, then
``<|startoftext|>`` and ``<|endoftext|>`` -- 49,408 tokens, ids identical to
``openai/clip-vit-large-patch14``.

Reproduce::

    pip download open-clip-torch==3.3.0 --no-deps -d /tmp/ocw
    python pipeline/diffusion/make_tokenizer_files.py /tmp/ocw/open_clip_torch-3.3.0-py3-none-any.whl

The source may also be the ``.txt.gz`` itself.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
OUT_DIR = Path(__file__).resolve().parent / "sd15_config" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def read_bpe_text(source: Path) -> str:
    if source.suffix == ".whl" or zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            raw = zf.read(MEMBER)
    else:
        raw = source.read_bytes()
    return gzip.decompress(raw).decode("utf-8")


def build(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    lines = bpe_text.split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(m) for m in merges]


def write(out_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    vocab, merges = build(read_bpe_text(args.source))
    assert len(vocab) == 49408, len(vocab)
    write(args.out, vocab, merges)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
