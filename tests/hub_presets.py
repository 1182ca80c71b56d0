"""Small keras-hub text models built from their constructors (nothing is downloaded)."""

import keras_hub

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_bert(words, width=32, sequence_length=32):
    """`(backbone, preprocessor)`: a one-layer BERT of `width` and its classifier
    preprocessor, the tokenizer's vocabulary the special tokens and `words`."""
    vocabulary = [*SPECIAL_TOKENS, *words]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=2 if width % 2 == 0 else 1,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=sequence_length,
    )
    return backbone, preprocessor
