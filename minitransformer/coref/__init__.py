"""The coreference application: the toy pronoun task built on the engine and its layers.

    from minitransformer.coref.training import TrainConfig, train
    from minitransformer.coref.data import make_dataset

``data/`` (sentences, tokenizer, batches), ``models/`` (the attention model and the
LSTM/CNN baselines), ``training.py``, ``compare.py`` and ``cli/`` (the ``train``,
``attend``, ``demo`` and ``compare`` commands). The engine, ``nn``, ``optim`` and ``viz``
never import this package.
"""
