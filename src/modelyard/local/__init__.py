"""Models that run in this process with no network: SmolLM2 on llama.cpp, MiniLM embeddings on
onnxruntime, fastText language identification, and classifiers and an FAQ retriever trained on
those embeddings.

Nothing here imports the `local` extra's packages at module level: each loader imports what it
needs when a config asks for it, so the core library works without `pip install 'modelyard[local]'`.
"""
