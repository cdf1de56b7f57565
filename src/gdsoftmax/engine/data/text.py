"""Text corpora as token streams, for language models trained on next-token prediction.

A corpus is one UTF-8 file, split by characters as nanoGPT splits Tiny Shakespeare: the first
``1 - val_size`` of it trains, the rest validates. Its tokenizer is one of

* ``"char"``: one token per distinct character of the corpus (65 for Tiny Shakespeare);
* ``"bpe"``: a byte-level BPE with ``data.vocab_size`` tokens, trained with the ``tokenizers`` library on
  the training split only (deterministic: the same corpus gives the same tokenizer);
* the path of a ``tokenizer.json`` trained elsewhere (``tokenizers``' format).

The data's fingerprint covers the corpus and the tokenizer, so a run resumed with a tokenizer trained
on another corpus (or another tokenizer file at the same path) is refused by the run identity.

>>> data = TextData.from_text("to be or not to be, that is the question. " * 20, context=8)
>>> data.num_classes, len(data.train) > len(data.val) > 8
(15, True)
>>> data.decode(data.train.tokens[:5].tolist())
'to be'
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from gdsoftmax.engine.data.checks import DataIntegrityError
from gdsoftmax.engine.data.images import DataNotFoundError, default_data_dir
from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure

__all__ = ["TEXT_CORPORA", "TextData", "TokenSplit", "is_text_dataset", "load_text", "train_bpe"]

# name -> (file under the data folder, where it is downloaded from, its SHA-256)
TEXT_CORPORA = {
    "tinyshakespeare": ("tinyshakespeare/input.txt",
                        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}
USER_CORPUS = "text:"  # data.dataset = "text:PATH" trains on the user's own UTF-8 file


def is_text_dataset(name: str) -> bool:
    """Whether ``data.dataset`` names a text corpus (a language-model run)."""
    return name in TEXT_CORPORA or name.startswith(USER_CORPUS)


@dataclass
class TokenSplit:
    tokens: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device) -> TokenSplit:
        return TokenSplit(self.tokens.to(device))


class _CharTokenizer:
    """One token per distinct character, in sorted order."""

    def __init__(self, alphabet: str):
        self.alphabet = alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.alphabet[t] for t in tokens)

    def description(self) -> str:
        return json.dumps({"char": self.alphabet})


class _LibraryTokenizer:
    """A ``tokenizers.Tokenizer`` seen through the same three methods."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def description(self) -> str:
        return self.tokenizer.to_str()


def train_bpe(text: str, vocab_size: int):
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``text`` (``tokenizers``).

    >>> tokenizer = train_bpe("the cat sat on the mat. " * 50, 300)
    >>> tokenizer.decode(tokenizer.encode("the mat").ids)
    'the mat'
    """
    tokenizers = _tokenizers()
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    lines = text.splitlines(keepends=True)
    tokenizer.train_from_iterator((lines[i : i + 1000] for i in range(0, len(lines), 1000)), trainer, len(lines))
    return tokenizer


def _tokenizers():
    try:
        import tokenizers
    except ImportError as error:  # the hf extra
        raise ValueError("data.tokenizer needs the tokenizers package: pip install 'gdsoftmax[hf]'") from error
    return tokenizers


@dataclass
class TextData:
    """A tokenized corpus: training and validation streams (``test`` is empty), the tokenizer and the
    window length (``context``) that training draws."""

    name: str
    train: TokenSplit
    val: TokenSplit
    test: TokenSplit
    tokenizer: object
    context: int
    source_hash: str  # SHA-256 of the corpus's bytes

    @property
    def num_classes(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def image_shape(self) -> tuple[int]:
        """What the model registry is given as the input shape: the window length."""
        return (self.context,)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def to(self, device) -> TextData:
        return TextData(self.name, self.train.to(device), self.val.to(device), self.test.to(device), self.tokenizer,
                        self.context, self.source_hash)

    def fingerprint(self) -> str:
        """A short hash of the corpus, the split and the tokenizer (what a resumed run must match)."""
        digest = hashlib.sha256(f"{self.source_hash}|{len(self.train)}|{len(self.val)}".encode())
        digest.update(self.tokenizer.description().encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str, *, context: int, val_size: int | float = 0.1, tokenizer: str = "char",
                  vocab_size: int = 8192, name: str = "text", source_hash: str = "") -> TextData:
        """Split ``text`` by characters (the last ``val_size`` validates) and tokenize both parts."""
        # int() as nanoGPT cuts Tiny Shakespeare: 1,003,854 training characters of 1,115,394
        n_val = len(text) - int(len(text) * (1 - val_size)) if isinstance(val_size, float) else int(val_size)
        if not 0 < n_val < len(text):
            raise ValueError(f"data.val_size {val_size!r} leaves no training or no validation text "
                             f"({len(text)} characters)")
        train_text, val_text = text[: len(text) - n_val], text[len(text) - n_val :]
        if tokenizer == "char":
            coder = _CharTokenizer("".join(sorted(set(text))))
        elif tokenizer == "bpe":
            coder = _LibraryTokenizer(train_bpe(train_text, vocab_size))
        else:
            coder = _LibraryTokenizer(_tokenizer_file(Path(tokenizer).expanduser()))
        splits = [TokenSplit(torch.tensor(_encoded(coder, part, tokenizer), dtype=torch.long))
                  for part in (train_text, val_text)]
        for split_name, split in zip(("training", "validation"), splits, strict=True):
            if len(split) <= context:
                raise ValueError(f"data.context = {context} is not shorter than the {split_name} split "
                                 f"({len(split)} tokens); lower data.context or change data.val_size")
        source_hash = source_hash or hashlib.sha256(text.encode()).hexdigest()
        return cls(name, *splits, TokenSplit(torch.zeros(0, dtype=torch.long)), coder, context, source_hash)


def _encoded(coder, text: str, tokenizer: str) -> list[int]:
    try:
        return coder.encode(text)
    except Exception as error:  # the tokenizers library's own errors (no unknown token, ...) have no common base
        raise ValueError(f"data.tokenizer: {tokenizer} cannot encode the corpus ({str(error).splitlines()[0][:120]});"
                         " give it an unknown token (e.g. WordLevel's unk_token) or use \"char\" or \"bpe\"") \
            from error


def _tokenizer_file(path: Path):
    if not path.is_file():
        raise ValueError(f"data.tokenizer: {path} is not a file; give \"char\", \"bpe\" or the path of a "
                         "tokenizer.json")
    try:
        return _tokenizers().Tokenizer.from_file(str(path))
    except Exception as error:  # the library's own parse errors
        raise ValueError(f"data.tokenizer: {path} is not a tokenizers tokenizer.json ({error})") from error


def load_text(name: str, data_dir: str | Path | None = None, *, context: int, download: bool = True,
              val_size: int | float = 0.1, tokenizer: str = "char", vocab_size: int = 8192) -> TextData:
    """Read the corpus ``name`` (or ``text:PATH``) from ``data_dir`` and tokenize it."""
    path, expected = _corpus_path(name, data_dir, download)
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if expected and digest != expected:
        raise DataIntegrityError(f"{path} is not the {name} corpus (SHA-256 {digest[:12]}..., expected "
                                 f"{expected[:12]}...); delete it to download it again, or point --data-dir at a "
                                 "good copy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataIntegrityError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save the "
                                 "corpus as UTF-8") from error
    return TextData.from_text(text, context=context, val_size=val_size, tokenizer=tokenizer, vocab_size=vocab_size,
                              name=name, source_hash=digest)


def _corpus_path(name: str, data_dir, download: bool) -> tuple[Path, str]:
    if name.startswith(USER_CORPUS):
        path = Path(name.removeprefix(USER_CORPUS)).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"the corpus {path} does not exist; data.dataset = \"text:PATH\" names a UTF-8 "
                                    "text file")
        return path, ""
    relative, url, expected = TEXT_CORPORA[name]
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = root / relative
    if not path.is_file():
        if not download:
            raise DataNotFoundError(f"{path} does not exist; put the {name} corpus there or set data.download=true")
        with folders_removed_on_failure(root):
            _download(url, path)
    return path, expected


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            partial.write_bytes(response.read())
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DataNotFoundError(f"{path} does not exist and could not be downloaded from {url} ({error}); "
                                "download it by hand, or point --data-dir at a folder that has it") from error
    partial.replace(path)
