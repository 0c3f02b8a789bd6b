"""Test helpers, one home for what several tiers use (nothing here ships in app/).

- fake_engine: FakeEngine, the scripted engine behind the HTTP-layer tests; fake_server runs `python -m app` on it.
- fake_hub: a threaded fake of the Hugging Face Hub (`serving(*repos)`), tiny model files.
- tiny_llama, tiny_chat, tiny_bert: randomly initialised tiny models for in-process engine tests.
- net.free_port, env (clean_environ; the `clean_env` fixture is in tests/conftest.py), prompts (the France
  question, its greedy answer, the get_weather tool), vectors.cosine.
"""
