"""The token ids every model of the training package shares (Keras TextVectorization's
convention), for the code that trains, serves and explains them."""

PADDING_ID = 0  # right padding, masked everywhere
OOV_ID = 1  # "[UNK]": a word outside the vocabulary
FIRST_WORD_ID = 2  # the most frequent word; the ids follow the vocabulary's frequency order
